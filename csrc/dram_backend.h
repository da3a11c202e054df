// DRAM: 64-byte-aligned system memory, as PyTorch's default CPU allocator.
#pragma once
#include "backend.h"

namespace torch_tier {

class DramBackend final : public Backend {
 public:
  void* allocate(size_t bytes) noexcept override;
  void deallocate(void* ptr) noexcept override;
  std::string describe() const override { return "dram"; }

  // The one process-wide instance; it is never released.
  static DramBackend& instance();
};

}  // namespace torch_tier
