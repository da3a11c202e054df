#include "block_cache.h"

#include <new>

namespace torch_tier {

void* BlockCache::take(size_t bytes, size_t dram_bytes, CachedShape* shape) noexcept {
  for (Record* record = bins_[bin_of(bytes, dram_bytes)]; record; record = record->bin_next) {
    if (record->shape.bytes == bytes && record->shape.dram_bytes == dram_bytes) {
      unlink(record);
      ++hits_;
      *shape = record->shape;
      return record;
    }
  }
  return nullptr;
}

bool BlockCache::put(void* block, const CachedShape& shape, size_t charge, Evicted* evicted) noexcept {
  if (charge > capacity_) return false;
  *evicted = evict_until(capacity_ - charge);
  Record*& bin = bins_[bin_of(shape.bytes, shape.dram_bytes)];
  auto* record = new (block) Record{nullptr, bin, newest_, nullptr, shape, charge};
  if (bin) bin->bin_prev = record;
  bin = record;
  (newest_ ? newest_->newer : oldest_) = record;
  newest_ = record;
  cached_ += charge;
  cached_dram_ += shape.dram_bytes;
  return true;
}

void BlockCache::unlink(Record* record) noexcept {
  (record->bin_prev ? record->bin_prev->bin_next : bins_[bin_of(record->shape.bytes, record->shape.dram_bytes)]) =
      record->bin_next;
  if (record->bin_next) record->bin_next->bin_prev = record->bin_prev;
  (record->older ? record->older->newer : oldest_) = record->newer;
  (record->newer ? record->newer->older : newest_) = record->older;
  cached_ -= record->charge;
  cached_dram_ -= record->shape.dram_bytes;
}

BlockCache::Evicted BlockCache::evict_until(size_t keep) noexcept {
  Evicted evicted;
  while (oldest_ && cached_ > keep) {
    Record* victim = oldest_;
    unlink(victim);
    victim->newer = evicted.chain_;
    evicted.chain_ = victim;
    ++evictions_;
  }
  return evicted;
}

BlockCache::Evicted BlockCache::set_capacity(size_t bytes) noexcept {
  capacity_ = bytes;
  return evict_until(bytes);
}

}  // namespace torch_tier
