// DRAM: 64-byte-aligned system memory, as PyTorch's default CPU allocator,
// except that it keeps the pages of large blocks it frees while the tiering
// allocator is enabled.
//
// glibc hands large blocks back to the OS on free (munmap, heap trimming), so
// every forward of a model page-faults its activations in afresh: 1,860 faults
// and 3.7x the time per forward for an 8x3x64x64 CNN here, or none and the
// fast time, depending on glibc's adaptive mmap threshold. That made DRAM
// timings bimodal, and unfair against the simulated tier, whose arena keeps
// its pages. So freed blocks of kCachedMin bytes or more wait in a cache, by
// exact size (inference repeats its sizes every forward), for the next
// allocation of that size.
//
// The cache is bounded (default: 1/16 of this machine's memory, at most
// 1 GiB; set_cache_capacity changes it): a block that would overflow it
// evicts the least recently freed blocks first, so the blocks of the current
// forward stay. Its bytes are DRAM the tier holds beyond its live blocks;
// the allocator reports them (stats()["dram"]["cached_bytes"]).
#pragma once
#include <atomic>
#include <mutex>

#include "backend.h"
#include "block_cache.h"

namespace torch_tier {

class DramBackend final : public Backend {
 public:
  static constexpr size_t kCachedMin = size_t{64} << 10;  // smaller blocks stay in malloc's bins anyway

  void* allocate(size_t bytes) noexcept override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  std::string describe() const override { return "dram"; }

  // Start or stop keeping freed blocks; stopping returns every cached block to the system.
  void set_caching(bool on) noexcept;
  // At most `bytes` wait in the cache (least recently freed evicted first).
  void set_cache_capacity(size_t bytes) noexcept;
  BlockCacheStats cache_stats() noexcept;
  // 1/16 of physical memory, at most 1 GiB.
  static size_t default_cache_capacity() noexcept;

  // The one process-wide instance; it is never released.
  static DramBackend& instance();

 private:
  DramBackend();
  static void free_all(BlockCache::Evicted& evicted) noexcept;

  std::mutex mutex_;
  BlockCache cache_;
  std::atomic<bool> caching_{false};  // read unlocked first: off, the hot path takes no lock
};

}  // namespace torch_tier
