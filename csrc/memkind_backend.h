// Memory from a memkind kind (a PMEM file-backed heap, or DAX KMEM NUMA
// memory). The kind and the library's entry points come from the Python cffi
// binding (torch_tier/memkind.py), so the library is bound once, not twice.
// Blocks are 256-byte aligned (Optane's access granularity); a block occupies
// what memkind's jemalloc says it does (its size class: malloc_usable_size).
#pragma once
#include "backend.h"

namespace torch_tier {

struct MemkindApi {
  int (*posix_memalign)(void* kind, void** ptr, size_t alignment, size_t size);
  void (*free)(void* kind, void* ptr);
  int (*destroy_kind)(void* kind);                       // nullptr for static kinds such as MEMKIND_DAX_KMEM
  size_t (*malloc_usable_size)(void* kind, void* ptr);   // nullptr: count the request rounded to 256 B
};

class MemkindBackend final : public Backend {
 public:
  MemkindBackend(void* kind, MemkindApi api, std::string name)
      : kind_(kind), api_(api), name_(std::move(name)) {}
  ~MemkindBackend() override;
  MemkindBackend(const MemkindBackend&) = delete;
  MemkindBackend& operator=(const MemkindBackend&) = delete;

  void* allocate(size_t bytes) noexcept override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  size_t block_bytes(const void* ptr, size_t bytes) const noexcept override;
  std::string describe() const override { return name_; }
  bool can_split() const noexcept override { return true; }
  void* allocate_pages(size_t bytes) noexcept override;

 private:
  void* aligned(size_t bytes, size_t alignment) noexcept;

  void* kind_;
  MemkindApi api_;
  std::string name_;
};

}  // namespace torch_tier
