// The narrow interface every tier's memory comes through. A backend hands out
// 64-byte-aligned blocks and takes them back; the allocator does the rest
// (headers, stats, tiers). New kinds of memory (libnuma, UMF) are a new
// Backend beside these.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace torch_tier {

constexpr size_t kAlignment = 64;

inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

class Backend {
 public:
  virtual ~Backend() = default;

  // A 64-byte-aligned block of at least `bytes`, or nullptr when full.
  virtual void* allocate(size_t bytes) noexcept = 0;
  // Takes back a block of `allocate(bytes)`.
  virtual void deallocate(void* ptr, size_t bytes) noexcept = 0;
  virtual std::string describe() const = 0;

  // Backends outlive their users: each live block holds a reference, so a
  // tier replaced or disabled stays valid until its last block is freed.
  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  std::atomic<int64_t> refs_{1};
};

// Releases a backend reference when it goes out of scope.
struct BackendRef {
  Backend* backend = nullptr;
  explicit BackendRef(Backend* b = nullptr) : backend(b) {}
  BackendRef(const BackendRef&) = delete;
  BackendRef& operator=(const BackendRef&) = delete;
  ~BackendRef() {
    if (backend) backend->release();
  }
};

}  // namespace torch_tier
