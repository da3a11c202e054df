// A fixed-capacity arena of its own mapped memory: the simulated slow tier.
// Ownership, accounting, capacity and fragmentation are real; only the
// slowness is simulated (by the runtime, from the cost model).
//
// The arena is divided into 256-byte cells (Optane's access granularity);
// every block is a whole number of cells, so payloads are 256-byte aligned
// and a block of n bytes occupies round_up(n, 256). All bookkeeping is out of
// band, in a table of one 16-byte record per cell (mapped lazily: only the
// records of block boundaries are ever touched): a block's size at its first
// and last cell (boundary tags, for coalescing), and for a free block the
// links of a treap of free blocks, ordered as the fit rule needs:
//   first, next: by address, each node knowing the largest block below it;
//   best:        by (size, address);
//   worst:       by (size descending, address).
// So choosing a block costs O(log free blocks), not a scan of the free list,
// and the rules keep their exact placement (lowest address among ties).
#pragma once
#include <functional>
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

class ArenaBackend : public Backend {
 public:
  static constexpr size_t kCell = kPmAlignment;
  static constexpr size_t kMaxCapacity = ((size_t{1} << 31) - 1) * kCell;  // cell counts are 31-bit

  // Throws std::invalid_argument for a capacity of under one cell or over
  // kMaxCapacity, std::runtime_error if the memory cannot be mapped. `place`,
  // if given, is called on the arena's memory before anything touches it (a
  // NUMA backend binds it to its node there); what it throws, this throws.
  ArenaBackend(size_t capacity, Fit fit, const std::function<void(void*, size_t)>& place = {});
  ~ArenaBackend() override;
  ArenaBackend(const ArenaBackend&) = delete;
  ArenaBackend& operator=(const ArenaBackend&) = delete;

  void* allocate(size_t bytes) noexcept override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  size_t block_bytes(const void*, size_t bytes) const noexcept override { return round_up(bytes, kCell); }
  std::string describe() const override;
  bool can_split() const noexcept override { return true; }
  void* allocate_pages(size_t bytes) noexcept override;
  ArenaLayout layout();
  size_t capacity() const { return capacity_; }
  Fit fit() const { return fit_; }

 private:
  using Index = uint32_t;  // a cell
  static constexpr Index kNil = UINT32_MAX;
  struct Cell {
    uint32_t size;  // in cells, with kFree; at a block's first and last cell
    Index left, right;
    uint32_t max;   // the largest free block in this node's subtree (cells)
  };
  static constexpr uint32_t kFree = uint32_t{1} << 31;

  uint32_t size_of(Index c) const { return cells_[c].size & ~kFree; }
  bool is_free(Index c) const { return cells_[c].size & kFree; }
  void mark(Index c, uint32_t size, bool free);
  bool before(Index a, Index b) const;  // the tree's order
  uint32_t max_of(Index c) const { return c == kNil ? 0 : cells_[c].max; }
  void pull(Index c);
  void split(Index tree, Index key, Index* less, Index* rest);
  Index merge(Index a, Index b);
  Index insert(Index tree, Index node);
  Index erase(Index tree, Index node);
  Index choose(uint32_t need) const;
  Index first_from(Index tree, Index from, uint32_t need) const;
  // A block of `bytes` whose first cell is a multiple of `align` cells.
  void* allocate_aligned(size_t bytes, uint32_t align) noexcept;

  char* base_;
  size_t capacity_;
  Index cell_count_;
  Cell* cells_;
  Fit fit_;
  std::mutex mutex_;
  Index root_ = kNil;
  Index rover_ = 0;  // next fit resumes from here
  Index high_water_ = 0;
  size_t free_cells_ = 0, free_blocks_ = 0;
};

}  // namespace torch_tier
