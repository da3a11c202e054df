// A tier's planned arena: one region reserved from the tier's own backend,
// whose blocks are handed out at offsets planned ahead of time for the
// allocations of one forward pass, matched by order and size.
//
// Anything unplanned falls back to the inner backend and is counted: a size
// that differs from the plan ends planning for the rest of the forward (the
// sequence has diverged); a planned slot whose space is still held by a live
// block (e.g. the previous forward's output, still referenced) is skipped
// alone. So a plan can be slow to help, never wrong.
//
// Live planned blocks never overlap, so whether a slot's space is free is one
// question: does the live block starting last before the slot's end reach
// into it? A bit set over the plan's distinct offsets answers it in
// O(log64 offsets) word operations per allocation.
#pragma once
#include <mutex>
#include <vector>

#include "backend.h"

namespace torch_tier {

struct PlannedStats {
  int64_t planned;    // allocations served at their planned offset
  int64_t unplanned;  // served by the inner backend instead
  int64_t arena_bytes;
};

// A set of indices in [0, n) with O(log64 n) insert, erase and "the largest
// member at most i".
class RankSet {
 public:
  explicit RankSet(size_t n);
  void insert(size_t i) noexcept;
  void erase(size_t i) noexcept;
  // The largest member <= i, or -1.
  int64_t prev(int64_t i) const noexcept;

 private:
  std::vector<std::vector<uint64_t>> levels_;  // levels_[0]: one bit per index; each level above: one bit per word below
};

class PlannedBackend final : public Backend {
 public:
  // `sizes` and `offsets`: the plan, one entry per allocation in forward
  // order (sizes as this backend is asked for them); `arena_bytes` its peak.
  // Every offset is a multiple of `alignment`, the inner backend's own
  // (kPmAlignment for a slow tier), and a planned block counts as its size
  // rounded up to it. Holds a reference to `inner` while it lives. Throws
  // std::bad_alloc if the region cannot be reserved, std::invalid_argument
  // for an inconsistent plan.
  PlannedBackend(Backend* inner, std::vector<size_t> sizes, std::vector<size_t> offsets,
                 size_t arena_bytes, size_t alignment);
  ~PlannedBackend() override;
  PlannedBackend(const PlannedBackend&) = delete;
  PlannedBackend& operator=(const PlannedBackend&) = delete;

  void* allocate(size_t bytes) noexcept override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  size_t block_bytes(const void* ptr, size_t bytes) const noexcept override;
  std::string describe() const override;

  // A forward pass starts: the next allocation is the plan's first.
  void begin() noexcept;
  PlannedStats stats();

 private:
  bool in_region(const void* ptr) const;
  bool space_free(size_t slot) const;
  size_t offset_rank(size_t offset) const;

  Backend* inner_;
  char* region_;
  size_t arena_bytes_, alignment_;
  std::vector<size_t> sizes_, offsets_;
  std::vector<size_t> distinct_offsets_;  // sorted
  std::vector<int64_t> live_at_;          // per distinct offset: the live slot, or -1
  RankSet live_ranks_;                    // the distinct offsets with a live slot
  std::mutex mutex_;
  size_t cursor_ = 0;
  bool on_plan_ = false;
  int64_t planned_ = 0, unplanned_ = 0;
};

}  // namespace torch_tier
