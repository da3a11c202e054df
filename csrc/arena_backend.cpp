#include "arena_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <stdexcept>

namespace torch_tier {

namespace {

// A treap node's priority: a fixed hash of its cell, so layouts are reproducible.
uint32_t priority(uint32_t cell) {
  uint32_t x = cell * 0x9E3779B1u;
  x ^= x >> 15;
  x *= 0x85EBCA77u;
  return x ^ (x >> 13);
}

void* map_zeroed(size_t bytes) {
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return mem == MAP_FAILED ? nullptr : mem;
}

}  // namespace

Fit parse_fit(const std::string& name) {
  if (name == "first") return Fit::kFirst;
  if (name == "best") return Fit::kBest;
  if (name == "worst") return Fit::kWorst;
  if (name == "next") return Fit::kNext;
  throw std::invalid_argument("unknown fit '" + name + "' (expected first, best, worst or next)");
}

const char* fit_name(Fit fit) {
  switch (fit) {
    case Fit::kFirst: return "first";
    case Fit::kBest: return "best";
    case Fit::kWorst: return "worst";
    case Fit::kNext: return "next";
  }
  return "?";
}

ArenaBackend::ArenaBackend(size_t capacity, Fit fit, const std::function<void(void*, size_t)>& place)
    : capacity_(round_up(capacity, kCell)), fit_(fit) {
  if (capacity < kCell || capacity > kMaxCapacity)
    throw std::invalid_argument("arena capacity must be from 256 bytes to 512 GiB, got " + std::to_string(capacity));
  cell_count_ = static_cast<Index>(capacity_ / kCell);
  base_ = static_cast<char*>(map_zeroed(capacity_));
  cells_ = static_cast<Cell*>(map_zeroed(size_t{cell_count_} * sizeof(Cell)));
  auto unmap = [&] {
    if (base_) munmap(base_, capacity_);
    if (cells_) munmap(cells_, size_t{cell_count_} * sizeof(Cell));
  };
  if (!base_ || !cells_) {
    unmap();
    throw std::runtime_error("cannot map an arena of " + std::to_string(capacity_) + " bytes");
  }
  if (place) {
    try {
      place(base_, capacity_);
    } catch (...) {
      unmap();
      throw;
    }
  }
  mark(0, cell_count_, true);
  root_ = insert(kNil, 0);
  free_cells_ = cell_count_;
  free_blocks_ = 1;
}

ArenaBackend::~ArenaBackend() {
  munmap(base_, capacity_);
  munmap(cells_, size_t{cell_count_} * sizeof(Cell));
}

std::string ArenaBackend::describe() const {
  return std::string("sim arena, ") + std::to_string(capacity_) + " bytes, " + fit_name(fit_) + " fit";
}

void ArenaBackend::mark(Index c, uint32_t size, bool free) {
  const uint32_t word = size | (free ? kFree : 0);
  cells_[c].size = word;
  cells_[c + size - 1].size = word;
  if (free) {
    cells_[c].left = cells_[c].right = kNil;
    cells_[c].max = size;
  }
}

bool ArenaBackend::before(Index a, Index b) const {
  switch (fit_) {
    case Fit::kBest:
      if (size_of(a) != size_of(b)) return size_of(a) < size_of(b);
      break;
    case Fit::kWorst:
      if (size_of(a) != size_of(b)) return size_of(a) > size_of(b);
      break;
    case Fit::kFirst:
    case Fit::kNext:
      break;
  }
  return a < b;
}

void ArenaBackend::pull(Index c) {
  cells_[c].max = std::max({size_of(c), max_of(cells_[c].left), max_of(cells_[c].right)});
}

void ArenaBackend::split(Index tree, Index key, Index* less, Index* rest) {
  if (tree == kNil) {
    *less = *rest = kNil;
  } else if (before(tree, key)) {
    split(cells_[tree].right, key, &cells_[tree].right, rest);
    pull(tree);
    *less = tree;
  } else {
    split(cells_[tree].left, key, less, &cells_[tree].left);
    pull(tree);
    *rest = tree;
  }
}

ArenaBackend::Index ArenaBackend::merge(Index a, Index b) {
  if (a == kNil) return b;
  if (b == kNil) return a;
  if (priority(a) > priority(b)) {
    cells_[a].right = merge(cells_[a].right, b);
    pull(a);
    return a;
  }
  cells_[b].left = merge(a, cells_[b].left);
  pull(b);
  return b;
}

ArenaBackend::Index ArenaBackend::insert(Index tree, Index node) {
  if (tree == kNil) return node;
  if (priority(node) > priority(tree)) {
    split(tree, node, &cells_[node].left, &cells_[node].right);
    pull(node);
    return node;
  }
  if (before(node, tree)) cells_[tree].left = insert(cells_[tree].left, node);
  else cells_[tree].right = insert(cells_[tree].right, node);
  pull(tree);
  return tree;
}

ArenaBackend::Index ArenaBackend::erase(Index tree, Index node) {
  if (tree == node) return merge(cells_[node].left, cells_[node].right);
  if (before(node, tree)) cells_[tree].left = erase(cells_[tree].left, node);
  else cells_[tree].right = erase(cells_[tree].right, node);
  pull(tree);
  return tree;
}

// The lowest-addressed free block at or after cell `from` with `need` cells
// (address-ordered trees only).
ArenaBackend::Index ArenaBackend::first_from(Index tree, Index from, uint32_t need) const {
  if (tree == kNil || cells_[tree].max < need) return kNil;
  if (tree < from) return first_from(cells_[tree].right, from, need);
  if (Index below = first_from(cells_[tree].left, from, need); below != kNil) return below;
  if (size_of(tree) >= need) return tree;
  return first_from(cells_[tree].right, from, need);
}

ArenaBackend::Index ArenaBackend::choose(uint32_t need) const {
  switch (fit_) {
    case Fit::kFirst:
      return first_from(root_, 0, need);
    case Fit::kNext:
      if (Index after = first_from(root_, rover_, need); after != kNil) return after;
      return first_from(root_, 0, need);  // wrap around
    case Fit::kBest: {  // the smallest (size, address) with size >= need
      Index found = kNil;
      for (Index t = root_; t != kNil;) {
        if (size_of(t) >= need) {
          found = t;
          t = cells_[t].left;
        } else {
          t = cells_[t].right;
        }
      }
      return found;
    }
    case Fit::kWorst: {  // the first in (size descending, address) order, if it is large enough
      Index t = root_;
      if (t == kNil) return kNil;
      while (cells_[t].left != kNil) t = cells_[t].left;
      return size_of(t) >= need ? t : kNil;
    }
  }
  return kNil;
}

void* ArenaBackend::allocate(size_t bytes) noexcept { return allocate_aligned(bytes, 1); }

void* ArenaBackend::allocate_pages(size_t bytes) noexcept {
  return allocate_aligned(bytes, kPageBytes / kCell);  // base_ is page aligned (mmap)
}

void* ArenaBackend::allocate_aligned(size_t bytes, uint32_t align) noexcept {
  if (bytes == 0 || bytes > capacity_) return nullptr;
  const auto need = static_cast<uint32_t>(round_up(bytes, kCell) / kCell);
  std::lock_guard<std::mutex> lock(mutex_);
  const Index block = choose(need + align - 1);  // holds an aligned run of `need` wherever it starts
  if (block == kNil) return nullptr;
  root_ = erase(root_, block);
  const uint32_t size = size_of(block);
  --free_blocks_;
  const auto start = static_cast<Index>(round_up(block, align));
  if (start > block) {  // the cells before the aligned start stay free
    mark(block, start - block, true);
    root_ = insert(root_, block);
    ++free_blocks_;
  }
  const Index end = start + need;
  if (block + size > end) {
    mark(end, block + size - end, true);
    root_ = insert(root_, end);
    ++free_blocks_;
  }
  mark(start, need, false);
  free_cells_ -= need;
  rover_ = end;
  high_water_ = std::max(high_water_, rover_);
  return base_ + size_t{start} * kCell;
}

void ArenaBackend::deallocate(void* ptr, size_t /*bytes: the cell records know*/) noexcept {
  auto block = static_cast<Index>((static_cast<char*>(ptr) - base_) / kCell);
  std::lock_guard<std::mutex> lock(mutex_);
  uint32_t size = size_of(block);
  free_cells_ += size;
  ++free_blocks_;
  if (const Index next = block + size; next < cell_count_ && is_free(next)) {
    root_ = erase(root_, next);
    size += size_of(next);
    --free_blocks_;
  }
  if (block > 0 && is_free(block - 1)) {
    const Index prev = block - size_of(block - 1);
    root_ = erase(root_, prev);
    size += size_of(prev);
    block = prev;
    --free_blocks_;
  }
  mark(block, size, true);
  root_ = insert(root_, block);
}

ArenaLayout ArenaBackend::layout() {
  std::lock_guard<std::mutex> lock(mutex_);
  return {capacity_, size_t{high_water_} * kCell, free_cells_ * kCell, size_t{max_of(root_)} * kCell, free_blocks_};
}

}  // namespace torch_tier
