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
#pragma once
#include <array>
#include <atomic>
#include <mutex>

#include "backend.h"

namespace torch_tier {

class DramBackend final : public Backend {
 public:
  static constexpr size_t kCachedMin = size_t{64} << 10;  // smaller blocks stay in malloc's bins anyway
  static constexpr size_t kDefaultCacheCapacity = size_t{1} << 30;

  void* allocate(size_t bytes) noexcept override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  std::string describe() const override { return "dram"; }

  // Start or stop keeping freed blocks; stopping returns every cached block to the system.
  void set_caching(bool on) noexcept;
  // At most `bytes` wait in the cache: a block that would exceed it empties the cache first.
  void set_cache_capacity(size_t bytes) noexcept;
  size_t cached_bytes() noexcept;

  // The one process-wide instance; it is never released.
  static DramBackend& instance();

 private:
  struct FreeBlock {  // written into a cached block's own memory
    FreeBlock* next;
    size_t bytes;
  };
  static constexpr size_t kBins = 1024;

  static size_t bin_of(size_t bytes) { return (bytes / kAlignment) % kBins; }
  void empty_locked() noexcept;

  std::mutex mutex_;
  std::array<FreeBlock*, kBins> bins_{};
  size_t cached_ = 0;
  size_t capacity_ = kDefaultCacheCapacity;
  std::atomic<bool> caching_{false};  // read unlocked first: off, the hot path takes no lock
};

}  // namespace torch_tier
