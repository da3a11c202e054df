#include "memkind_backend.h"

namespace torch_tier {

MemkindBackend::~MemkindBackend() {
  if (api_.destroy_kind) api_.destroy_kind(kind_);
}

void* MemkindBackend::allocate(size_t bytes) noexcept {
  void* ptr = nullptr;
  return api_.posix_memalign(kind_, &ptr, kAlignment, bytes) == 0 ? ptr : nullptr;
}

void MemkindBackend::deallocate(void* ptr, size_t /*bytes*/) noexcept { api_.free(kind_, ptr); }

}  // namespace torch_tier
