// Out-of-band block metadata: a three-level radix tree from a block's address
// to its record (as jemalloc's rtree), so blocks carry no header and a free
// finds its backend from the pointer alone (raw_allocate requires a DataPtr's
// data and context to be the same pointer).
//
// A split block (page aligned, two pages or more) keeps its dram_bytes and pm
// in the records of its second and third granules, which no other block can
// start at.
//
// Keys are addresses at 64-byte granularity (every block is 64-byte aligned),
// 48-bit user-space addresses. Interior nodes and leaves are mapped lazily
// with mmap and installed with a compare-and-swap, and never unmapped: insert,
// find and erase take no lock and allocate nothing once the leaf of an
// address range exists. A leaf is 4096 records of 8 bytes (32 KiB) covering
// 256 KiB of addresses; only the pages of records in use become resident.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace torch_tier {

struct BlockRecord {
  uint64_t bytes;     // as requested by PyTorch
  uint8_t slot;       // the backend's slot in the allocator
  uint8_t tier;       // of a split block: kPm, the tier of its backend
  bool traced;        // allocated while tracing: its free is traced too
  bool profiled;      // reported to PyTorch's profiler: its free is too
  uint64_t dram_bytes = 0;  // a split block's DRAM pages (Backend::allocate_split); 0: a whole block
  void* pm = nullptr;       // a split block's SplitParts::pm
};

class BlockMap {
 public:
  static constexpr uint64_t kMaxBytes = (uint64_t{1} << 48) - 1;

  BlockMap();  // throws std::bad_alloc if the root cannot be mapped
  ~BlockMap();
  BlockMap(const BlockMap&) = delete;
  BlockMap& operator=(const BlockMap&) = delete;

  // Records a new block; false if its address is out of range or a node
  // cannot be mapped. record.bytes must be at most kMaxBytes.
  bool insert(const void* ptr, const BlockRecord& record) noexcept;
  // The block's record; false if `ptr` is not a live block's address.
  bool find(const void* ptr, BlockRecord* out) const noexcept;
  // Removes the block and returns its record; false if there was none.
  bool erase(const void* ptr, BlockRecord* out) noexcept;

 private:
  static constexpr int kGranuleBits = 6, kLeafBits = 12, kMidBits = 12;
  static constexpr int kRootBits = 48 - kGranuleBits - kLeafBits - kMidBits;
  using Leaf = std::atomic<uint64_t>;  // [1 << kLeafBits]
  using Mid = std::atomic<Leaf*>;      // [1 << kMidBits]

  Leaf* leaf_of(const void* ptr, bool create) const noexcept;
  Leaf* entry_of(const void* ptr, bool create) const noexcept;  // the block's first record

  std::atomic<Mid*>* root_;  // [1 << kRootBits], mapped once
};

}  // namespace torch_tier
