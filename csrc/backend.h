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
