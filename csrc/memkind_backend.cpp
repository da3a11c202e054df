#include "memkind_backend.h"

namespace torch_tier {

MemkindBackend::~MemkindBackend() {
  if (api_.destroy_kind) api_.destroy_kind(kind_);
}

void* MemkindBackend::allocate(size_t bytes) noexcept { return aligned(bytes, kPmAlignment); }

void* MemkindBackend::allocate_pages(size_t bytes) noexcept { return aligned(bytes, kPageBytes); }

void* MemkindBackend::aligned(size_t bytes, size_t alignment) noexcept {
  void* ptr = nullptr;
  return api_.posix_memalign(kind_, &ptr, alignment, bytes) == 0 ? ptr : nullptr;
}

void MemkindBackend::deallocate(void* ptr, size_t /*bytes*/) noexcept { api_.free(kind_, ptr); }

size_t MemkindBackend::block_bytes(const void* ptr, size_t bytes) const noexcept {
  if (!api_.malloc_usable_size) return round_up(bytes, kPmAlignment);
  return api_.malloc_usable_size(kind_, const_cast<void*>(ptr));
}

}  // namespace torch_tier
