#include "dram_backend.h"

#include <cstdlib>

namespace torch_tier {

void* DramBackend::allocate(size_t bytes) noexcept {
  void* ptr = nullptr;
  return posix_memalign(&ptr, kAlignment, bytes) == 0 ? ptr : nullptr;
}

void DramBackend::deallocate(void* ptr) noexcept { std::free(ptr); }

DramBackend& DramBackend::instance() {
  static DramBackend* dram = new DramBackend();  // leaked on purpose: frees may come at exit
  return *dram;
}

}  // namespace torch_tier
