#include "split_cache.h"

namespace torch_tier {

template <typename Change>
bool SplitCache::evict(Change&& change) noexcept {
  BlockCache::Evicted evicted;
  Backend* backend;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    backend = backend_;
    evicted = change();
  }
  const bool any = !evicted.empty();
  give_back(evicted, backend);
  return any;
}

void SplitCache::start(Backend* backend, size_t capacity) noexcept {
  evict([&] {  // stop() emptied it: nothing to give back
    backend_ = backend;
    return blocks_.set_capacity(capacity);
  });
}

void SplitCache::stop() noexcept {
  evict([this] {
    backend_ = nullptr;
    return blocks_.evict_until(0);
  });
}

Backend::SplitParts SplitCache::take(size_t bytes, size_t dram_bytes) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  CachedShape shape;
  void* block = blocks_.take(round_up(bytes, kPageBytes), dram_bytes, &shape);
  return {block, block ? shape.pm : nullptr};
}

void SplitCache::put(Backend* backend, Backend::SplitParts parts, size_t bytes, size_t dram_bytes) noexcept {
  const size_t pages = round_up(bytes, kPageBytes);
  BlockCache::Evicted evicted;
  bool kept;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    kept = backend_ && blocks_.put(parts.block, {pages, dram_bytes, parts.pm}, pages, &evicted);
  }
  give_back(evicted, backend);
  if (!kept) backend->deallocate_split(parts, pages, dram_bytes);
}

bool SplitCache::drain() noexcept {
  return evict([this] { return blocks_.evict_until(0); });
}

void SplitCache::set_capacity(size_t bytes) noexcept {
  evict([this, bytes] { return blocks_.set_capacity(bytes); });
}

BlockCacheStats SplitCache::stats() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  return blocks_.stats();
}

void SplitCache::give_back(BlockCache::Evicted& evicted, Backend* backend) noexcept {
  evicted.each([backend](void* block, const CachedShape& shape) {
    backend->deallocate_split({block, shape.pm}, shape.bytes, shape.dram_bytes);
  });
}

}  // namespace torch_tier
