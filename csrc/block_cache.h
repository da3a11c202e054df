// Freed blocks kept for the next allocation of the same shape: exact-size
// bins, bounded in bytes, least recently freed evicted first. The DRAM tier
// (dram_backend.h) and split blocks (split_cache.h) keep theirs in one each.
//
// Intrusive: a cached block's record is written into the block's own first
// bytes (kRecordBytes), so keeping a block allocates nothing. Not
// thread-safe: its owner locks around every call, and frees what eviction
// hands back outside that lock.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace torch_tier {

// What a cached block is: the key it is found by (bytes, dram_bytes) and
// what its owner needs to free it. dram_bytes and pm are a split block's
// (Backend::SplitParts); 0 and nullptr for a whole block.
struct CachedShape {
  size_t bytes;
  size_t dram_bytes;
  void* pm;
};

struct BlockCacheStats {
  size_t cached_bytes;
  size_t cached_dram_bytes;  // of cached_bytes, split blocks' DRAM pages
  size_t capacity;
  int64_t hits;       // allocations served from the cache
  int64_t evictions;  // blocks handed back to be freed to make room
};

class BlockCache {
 public:
  struct Record;
  static constexpr size_t kRecordBytes = 64;  // a block must hold this much

  // Blocks handed back by evict_until, for the owner to free outside its lock.
  class Evicted {
   public:
    Evicted() = default;
    Evicted(Evicted&& other) noexcept : chain_(other.chain_) { other.chain_ = nullptr; }
    Evicted& operator=(Evicted&& other) noexcept {
      std::swap(chain_, other.chain_);
      return *this;
    }
    bool empty() const noexcept { return !chain_; }
    // Calls free(block, shape) on each; call it once, or the blocks leak.
    template <typename Free>
    void each(Free&& free) noexcept;

   private:
    friend class BlockCache;
    Record* chain_ = nullptr;
  };

  explicit BlockCache(size_t capacity) : capacity_(capacity) {}
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // The most recently freed block of exactly (bytes, dram_bytes) and its
  // shape, or nullptr; a block found counts a hit.
  void* take(size_t bytes, size_t dram_bytes, CachedShape* shape) noexcept;
  // Keeps `block` (of `charge` bytes against the capacity), first evicting
  // the least recently freed blocks until it fits; false (nothing kept or
  // evicted) if charge exceeds the capacity.
  bool put(void* block, const CachedShape& shape, size_t charge, Evicted* evicted) noexcept;
  // Evicts, oldest first, until at most `keep` bytes are cached.
  Evicted evict_until(size_t keep) noexcept;
  // A new bound; evicts what exceeds it.
  Evicted set_capacity(size_t bytes) noexcept;
  BlockCacheStats stats() const noexcept { return {cached_, cached_dram_, capacity_, hits_, evictions_}; }
  size_t cached_bytes() const noexcept { return cached_; }
  size_t capacity() const noexcept { return capacity_; }

  struct Record {  // written into a cached block's own memory
    Record *bin_prev, *bin_next;  // blocks of the same bin
    Record *older, *newer;        // all cached blocks, by time freed
    CachedShape shape;
    size_t charge;
  };

 private:
  static constexpr size_t kBins = 1024;
  static size_t bin_of(size_t bytes, size_t dram_bytes) noexcept {
    return (bytes / 64 + dram_bytes / 4096 * 0x9E3779B1u) % kBins;
  }
  void unlink(Record* record) noexcept;

  std::array<Record*, kBins> bins_{};
  Record* oldest_ = nullptr;
  Record* newest_ = nullptr;
  size_t cached_ = 0, cached_dram_ = 0;
  size_t capacity_;
  int64_t hits_ = 0, evictions_ = 0;
};

static_assert(sizeof(BlockCache::Record) <= BlockCache::kRecordBytes, "a cached block's record must fit");

template <typename Free>
void BlockCache::Evicted::each(Free&& free) noexcept {
  while (Record* record = chain_) {
    chain_ = record->newer;
    const CachedShape shape = record->shape;  // freeing the block frees its record
    free(static_cast<void*>(record), shape);
  }
}

}  // namespace torch_tier
