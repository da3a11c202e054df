// A fixed-capacity arena of its own mapped memory: the simulated slow tier.
// Ownership, accounting, capacity and fragmentation are real; only the
// slowness is simulated (by the runtime, from the cost model).
//
// Blocks carry their bookkeeping in-band (a 64-byte tag before each block),
// so allocate/free never touch the heap. Free blocks sit in one unordered
// list; the fit rule picks among them.
#pragma once
#include <mutex>

#include "backend.h"

namespace torch_tier {

enum class Fit { kFirst, kBest, kWorst, kNext };

Fit parse_fit(const std::string& name);  // throws std::invalid_argument
const char* fit_name(Fit fit);

struct ArenaLayout {
  size_t capacity;
  size_t high_water;  // the highest end of any block ever allocated: the memory really touched
  size_t free_bytes;
  size_t largest_free;
  size_t free_blocks;
};

class ArenaBackend final : public Backend {
 public:
  ArenaBackend(size_t capacity, Fit fit);  // throws std::runtime_error if mmap fails
  ~ArenaBackend() override;
  ArenaBackend(const ArenaBackend&) = delete;
  ArenaBackend& operator=(const ArenaBackend&) = delete;

  void* allocate(size_t bytes) noexcept override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  std::string describe() const override;
  ArenaLayout layout();

 private:
  struct Tag;
  Tag* choose(size_t need) const;
  Tag* physical_next(Tag* tag) const;
  void unlink(Tag* tag);
  void push_free(Tag* tag);

  char* base_;
  size_t capacity_;
  Fit fit_;
  std::mutex mutex_;
  Tag* free_list_ = nullptr;
  const char* rover_;  // next fit resumes from here
  size_t high_water_ = 0;
};

}  // namespace torch_tier
