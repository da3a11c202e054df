// The narrow interface every tier's memory comes through. A backend hands out
// aligned blocks and takes them back; the allocator does the rest (the block
// map, stats, tiers, lifetimes). New kinds of memory (libnuma, UMF) are a new
// Backend beside these.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace torch_tier {

constexpr size_t kAlignment = 64;     // DRAM blocks, as PyTorch's default CPU allocator
constexpr size_t kPmAlignment = 256;  // slow-tier blocks: Optane's internal access granularity
constexpr size_t kPageBytes = 4096;   // split blocks: each page is in one tier

inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

class Backend {
 public:
  virtual ~Backend() = default;

  // A block of at least `bytes` (bytes > 0), aligned as the backend says, or
  // nullptr when full (or when `bytes` is too large to round up).
  virtual void* allocate(size_t bytes) noexcept = 0;
  // Takes back a block of `allocate(bytes)`.
  virtual void deallocate(void* ptr, size_t bytes) noexcept = 0;
  // The bytes a live block of `allocate(bytes)` really occupies in this
  // backend: `bytes` rounded up to its granularity (what its capacity and
  // the allocator's stats count).
  virtual size_t block_bytes(const void* ptr, size_t bytes) const noexcept { return round_up(bytes, kAlignment); }
  virtual std::string describe() const = 0;

  // Split blocks (policy format 2): one page-aligned virtual range of `bytes`
  // whose first `dram_bytes` (a whole number of kPageBytes, 0 < dram_bytes <
  // bytes) are DRAM pages and the rest this backend's. A live split block
  // occupies dram_bytes of DRAM and round_up(bytes, kPageBytes) - dram_bytes
  // here. can_split() false: the allocator raises an error naming describe().
  // The default composes the range (split_mapping.h) from fresh DRAM pages and
  // a page-aligned block of allocate_pages(), which a backend of mapped memory
  // provides (the sim arena, memkind's heaps); a backend that can place page
  // ranges of one mapping overrides allocate_split and deallocate_split
  // instead (NUMA: mbind of the two ranges of one mmap).
  struct SplitParts {
    void* block;  // the split block (its DRAM pages first); nullptr when either part cannot be had
    void* pm;     // this backend's own block that held its pm pages, for deallocate_split
  };
  virtual bool can_split() const noexcept { return false; }
  virtual SplitParts allocate_split(size_t bytes, size_t dram_bytes) noexcept;
  // Takes back the parts of `allocate_split(bytes, dram_bytes)`.
  virtual void deallocate_split(SplitParts parts, size_t bytes, size_t dram_bytes) noexcept;
  // A block of `bytes` (a whole number of kPageBytes) starting on a page, or
  // nullptr when full or when this backend cannot align to pages.
  virtual void* allocate_pages(size_t /*bytes*/) noexcept { return nullptr; }

  // Owners of a backend (the allocator's slot while it has live blocks, a
  // planned arena built on it) each hold a reference; the last one deletes
  // it. Never touched on the allocation path.
  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  std::atomic<int64_t> refs_{1};
};

}  // namespace torch_tier
