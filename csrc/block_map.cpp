#include "block_map.h"

#include <sys/mman.h>

#include <new>

namespace torch_tier {

namespace {

constexpr uint64_t kPresent = uint64_t{1} << 63;
constexpr uint64_t kSplit = uint64_t{1} << 59;  // the next two records hold dram_bytes and pm
constexpr uint64_t kProfiled = uint64_t{1} << 58;
constexpr uint64_t kTraced = uint64_t{1} << 57;
constexpr int kTierShift = 56, kSlotShift = 48;

uint64_t encode(const BlockRecord& r) {
  return kPresent | (r.dram_bytes ? kSplit : 0) | (r.profiled ? kProfiled : 0) | (r.traced ? kTraced : 0) |
         (uint64_t{r.tier} & 1) << kTierShift | uint64_t{r.slot} << kSlotShift | (r.bytes & BlockMap::kMaxBytes);
}

// The record whose first word is `word`, at `entry` (a split block's two more follow it).
BlockRecord decode(const std::atomic<uint64_t>* entry, uint64_t word) {
  BlockRecord record{word & BlockMap::kMaxBytes, static_cast<uint8_t>(word >> kSlotShift),
                     static_cast<uint8_t>((word >> kTierShift) & 1), (word & kTraced) != 0, (word & kProfiled) != 0};
  if (word & kSplit) {
    record.dram_bytes = entry[1].load(std::memory_order_relaxed);
    record.pm = reinterpret_cast<void*>(entry[2].load(std::memory_order_relaxed));
  }
  return record;
}

// Zeroed memory for a node; nullptr if it cannot be mapped.
void* map_node(size_t bytes) {
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return mem == MAP_FAILED ? nullptr : mem;
}

// The node in `link`, mapping and installing one if it is empty (and `create`).
template <typename Node>
Node* child(std::atomic<Node*>& link, size_t count, bool create) {
  Node* node = link.load(std::memory_order_acquire);
  if (node || !create) return node;
  auto* fresh = static_cast<Node*>(map_node(count * sizeof(Node)));
  if (!fresh) return nullptr;
  if (link.compare_exchange_strong(node, fresh, std::memory_order_acq_rel)) return fresh;
  munmap(fresh, count * sizeof(Node));  // another thread installed one first
  return node;
}

}  // namespace

BlockMap::BlockMap() {
  root_ = static_cast<std::atomic<Mid*>*>(map_node(sizeof(std::atomic<Mid*>) << kRootBits));
  if (!root_) throw std::bad_alloc();
}

BlockMap::~BlockMap() {
  for (size_t i = 0; i < (size_t{1} << kRootBits); ++i) {
    Mid* mid = root_[i].load(std::memory_order_relaxed);
    if (!mid) continue;
    for (size_t j = 0; j < (size_t{1} << kMidBits); ++j)
      if (Leaf* leaf = mid[j].load(std::memory_order_relaxed)) munmap(leaf, sizeof(Leaf) << kLeafBits);
    munmap(mid, sizeof(Mid) << kMidBits);
  }
  munmap(root_, sizeof(std::atomic<Mid*>) << kRootBits);
}

BlockMap::Leaf* BlockMap::leaf_of(const void* ptr, bool create) const noexcept {
  const uint64_t key = reinterpret_cast<uintptr_t>(ptr) >> kGranuleBits;
  if (key >> (kRootBits + kMidBits + kLeafBits)) return nullptr;  // beyond 48-bit addresses
  Mid* mid = child(root_[key >> (kMidBits + kLeafBits)], size_t{1} << kMidBits, create);
  if (!mid) return nullptr;
  return child(mid[(key >> kLeafBits) & ((1 << kMidBits) - 1)], size_t{1} << kLeafBits, create);
}

bool BlockMap::insert(const void* ptr, const BlockRecord& record) noexcept {
  Leaf* entry = entry_of(ptr, true);
  if (!entry) return false;
  // Relaxed: the block reaches other threads only through PyTorch's own
  // synchronisation (the storage's refcount), which orders these stores.
  if (record.dram_bytes) {
    entry[1].store(record.dram_bytes, std::memory_order_relaxed);
    entry[2].store(reinterpret_cast<uintptr_t>(record.pm), std::memory_order_relaxed);
  }
  entry->store(encode(record), std::memory_order_relaxed);
  return true;
}

bool BlockMap::find(const void* ptr, BlockRecord* out) const noexcept {
  Leaf* entry = entry_of(ptr, false);
  if (!entry) return false;
  const uint64_t word = entry->load(std::memory_order_relaxed);
  if (!(word & kPresent)) return false;
  *out = decode(entry, word);
  return true;
}

bool BlockMap::erase(const void* ptr, BlockRecord* out) noexcept {
  Leaf* entry = entry_of(ptr, false);
  if (!entry) return false;
  const uint64_t word = entry->load(std::memory_order_relaxed);
  if (!(word & kPresent)) return false;
  *out = decode(entry, word);
  entry->store(0, std::memory_order_relaxed);  // only the block's last owner frees it: no RMW needed
  return true;
}

BlockMap::Leaf* BlockMap::entry_of(const void* ptr, bool create) const noexcept {
  Leaf* leaf = leaf_of(ptr, create);
  return leaf ? &leaf[(reinterpret_cast<uintptr_t>(ptr) >> kGranuleBits) & ((1 << kLeafBits) - 1)] : nullptr;
}

}  // namespace torch_tier
