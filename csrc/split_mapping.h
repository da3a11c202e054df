// Split blocks made of two kinds of memory in one virtual range (see
// Backend::allocate_split): a reserved range, fresh anonymous DRAM pages
// mapped at its start, and a slow-tier block's pages moved or aliased after
// them by mremap(MREMAP_DONTUNMAP) (Linux 5.13+ for shared mappings such as a
// memkind heap's file; 5.7+ for private ones). The slow tier's pages keep
// their memory and their NUMA policy: a shared mapping's pages are then
// reachable at both addresses, a private mapping's pages leave its range
// (which reads as fresh zero pages until the block goes back to its backend).
#pragma once
#include <cstddef>

namespace torch_tier {

// The split range: `dram_bytes` of DRAM, then the `pm_bytes` at `pm` (page
// aligned, a whole number of pages); nullptr if the kernel refuses.
void* compose_split(void* pm, size_t dram_bytes, size_t pm_bytes) noexcept;
// Unmaps a range of compose_split (its pm block still belongs to its backend).
void release_split(void* block, size_t bytes) noexcept;

}  // namespace torch_tier
