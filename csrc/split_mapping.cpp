#include "split_mapping.h"

#include <sys/mman.h>

#include "backend.h"

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4  // linux/mman.h, Linux 5.7
#endif

namespace torch_tier {

void* compose_split(void* pm, size_t dram_bytes, size_t pm_bytes) noexcept {
  const size_t bytes = dram_bytes + pm_bytes;
  void* range = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (range == MAP_FAILED) return nullptr;
  char* base = static_cast<char*>(range);
  const bool dram = mmap(base, dram_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) ==
                    base;
  if (!dram ||
      mremap(pm, pm_bytes, pm_bytes, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, base + dram_bytes) == MAP_FAILED) {
    munmap(base, bytes);
    return nullptr;
  }
  return base;
}

void release_split(void* block, size_t bytes) noexcept { munmap(block, round_up(bytes, kPageBytes)); }

Backend::SplitParts Backend::allocate_split(size_t bytes, size_t dram_bytes) noexcept {
  const size_t pm_bytes = round_up(bytes, kPageBytes) - dram_bytes;
  void* pm = allocate_pages(pm_bytes);
  if (!pm) return {nullptr, nullptr};
  void* block = compose_split(pm, dram_bytes, pm_bytes);
  if (!block) {
    deallocate(pm, pm_bytes);
    return {nullptr, nullptr};
  }
  return {block, pm};
}

void Backend::deallocate_split(SplitParts parts, size_t bytes, size_t dram_bytes) noexcept {
  release_split(parts.block, bytes);
  deallocate(parts.pm, round_up(bytes, kPageBytes) - dram_bytes);
}

}  // namespace torch_tier
