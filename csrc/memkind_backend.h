// Memory from a memkind kind (a PMEM file-backed heap, or DAX KMEM NUMA
// memory). The kind and the library's entry points come from the Python cffi
// binding (torch_tier/memkind.py), so the library is bound once, not twice.
#pragma once
#include "backend.h"

namespace torch_tier {

struct MemkindApi {
  int (*posix_memalign)(void* kind, void** ptr, size_t alignment, size_t size);
  void (*free)(void* kind, void* ptr);
  int (*destroy_kind)(void* kind);  // nullptr for static kinds such as MEMKIND_DAX_KMEM
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
  std::string describe() const override { return name_; }

 private:
  void* kind_;
  MemkindApi api_;
  std::string name_;
};

}  // namespace torch_tier
