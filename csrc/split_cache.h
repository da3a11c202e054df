// Freed split blocks (Backend::allocate_split) of one backend, kept whole (the
// composed range, its DRAM pages and its pm part) for the next split
// allocation of the same shape: a fresh one costs an mmap, an mremap and a
// munmap, and page faults on every page (12 us per allocate+free of 1 MiB
// against 1 us whole, 344 to 396 us written; benchmarks/results/overhead.md),
// and inference repeats its shapes every forward.
//
// Blocks are found by exact (pages, DRAM pages); at most `capacity` bytes of
// blocks (both parts) wait, least recently freed evicted first. Their DRAM
// pages are DRAM held beyond the tiers' live bytes, their pm pages pm held
// beyond them: the allocator reports both (stats()["dram"|"pm"]
// ["split_cached_bytes"]), drains the cache when pm is full, and stops it
// (draining it) when the backend's slot is retired, so no cached block
// outlives its backend. A cached block's contents are garbage on reuse.
#pragma once
#include <mutex>

#include "backend.h"
#include "block_cache.h"

namespace torch_tier {

class SplitCache {
 public:
  SplitCache() : blocks_(0) {}
  SplitCache(const SplitCache&) = delete;
  SplitCache& operator=(const SplitCache&) = delete;

  // Keeps `backend`'s freed split blocks from now on, at most `capacity` bytes.
  void start(Backend* backend, size_t capacity) noexcept;
  // Gives every cached block back to the backend and keeps no more.
  void stop() noexcept;
  // A cached block of (bytes, dram_bytes), or {nullptr, nullptr}.
  Backend::SplitParts take(size_t bytes, size_t dram_bytes) noexcept;
  // Keeps a freed block of `backend` (the one started with, if started), or
  // gives it back (stopped, or larger than the capacity).
  void put(Backend* backend, Backend::SplitParts parts, size_t bytes, size_t dram_bytes) noexcept;
  // Gives every cached block back to the backend; false if there was none.
  bool drain() noexcept;
  void set_capacity(size_t bytes) noexcept;
  BlockCacheStats stats() noexcept;

 private:
  // Runs `change` (which evicts) under the lock, then gives what it evicted
  // back to the backend (the one before `change`) outside it; true if any.
  template <typename Change>
  bool evict(Change&& change) noexcept;
  void give_back(BlockCache::Evicted& evicted, Backend* backend) noexcept;

  std::mutex mutex_;
  Backend* backend_ = nullptr;  // the cached blocks' backend; nullptr: stopped (and empty)
  BlockCache blocks_;
};

}  // namespace torch_tier
