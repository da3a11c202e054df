#include "arena_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <stdexcept>

namespace torch_tier {

struct ArenaBackend::Tag {
  size_t size;       // of the whole block, this tag included
  size_t prev_size;  // of the block just below, 0 for the first
  Tag* next_free;
  Tag* prev_free;
  bool free;
};

namespace {
constexpr size_t kMinBlock = 2 * kAlignment;
}

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

ArenaBackend::ArenaBackend(size_t capacity, Fit fit)
    : capacity_(round_up(capacity, kAlignment)), fit_(fit) {
  static_assert(sizeof(Tag) <= kAlignment, "tag must fit in one alignment unit");
  if (capacity_ < kMinBlock) throw std::invalid_argument("arena capacity must be at least 128 bytes");
  void* mem = mmap(nullptr, capacity_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("cannot map a simulated-tier arena of " +
                                                  std::to_string(capacity_) + " bytes");
  base_ = static_cast<char*>(mem);
  rover_ = base_;
  auto* whole = reinterpret_cast<Tag*>(base_);
  *whole = Tag{capacity_, 0, nullptr, nullptr, true};
  push_free(whole);
}

ArenaBackend::~ArenaBackend() { munmap(base_, capacity_); }

std::string ArenaBackend::describe() const {
  return std::string("sim arena, ") + std::to_string(capacity_) + " bytes, " + fit_name(fit_) + " fit";
}

ArenaBackend::Tag* ArenaBackend::physical_next(Tag* tag) const {
  char* next = reinterpret_cast<char*>(tag) + tag->size;
  return next < base_ + capacity_ ? reinterpret_cast<Tag*>(next) : nullptr;
}

void ArenaBackend::unlink(Tag* tag) {
  if (tag->prev_free) tag->prev_free->next_free = tag->next_free;
  else free_list_ = tag->next_free;
  if (tag->next_free) tag->next_free->prev_free = tag->prev_free;
}

void ArenaBackend::push_free(Tag* tag) {
  tag->free = true;
  tag->prev_free = nullptr;
  tag->next_free = free_list_;
  if (free_list_) free_list_->prev_free = tag;
  free_list_ = tag;
}

ArenaBackend::Tag* ArenaBackend::choose(size_t need) const {
  Tag* best = nullptr;
  Tag* lowest_after_rover = nullptr;
  for (Tag* t = free_list_; t; t = t->next_free) {
    if (t->size < need) continue;
    switch (fit_) {
      case Fit::kFirst:
        if (!best || t < best) best = t;
        break;
      case Fit::kBest:
        if (!best || t->size < best->size || (t->size == best->size && t < best)) best = t;
        break;
      case Fit::kWorst:
        if (!best || t->size > best->size || (t->size == best->size && t < best)) best = t;
        break;
      case Fit::kNext:
        if (reinterpret_cast<const char*>(t) >= rover_ &&
            (!lowest_after_rover || t < lowest_after_rover))
          lowest_after_rover = t;
        if (!best || t < best) best = t;  // wrap-around candidate
        break;
    }
  }
  return lowest_after_rover ? lowest_after_rover : best;
}

void* ArenaBackend::allocate(size_t bytes) noexcept {
  const size_t need = round_up(bytes, kAlignment) + kAlignment;
  if (need < bytes) return nullptr;  // overflow
  std::lock_guard<std::mutex> lock(mutex_);
  Tag* tag = choose(need);
  if (!tag) return nullptr;
  unlink(tag);
  if (tag->size - need >= kMinBlock) {
    auto* rest = reinterpret_cast<Tag*>(reinterpret_cast<char*>(tag) + need);
    *rest = Tag{tag->size - need, need, nullptr, nullptr, true};
    if (Tag* after = physical_next(rest)) after->prev_size = rest->size;
    tag->size = need;
    push_free(rest);
  }
  tag->free = false;
  rover_ = reinterpret_cast<char*>(tag) + tag->size;
  high_water_ = std::max(high_water_, static_cast<size_t>(rover_ - base_));
  return reinterpret_cast<char*>(tag) + kAlignment;
}

void ArenaBackend::deallocate(void* ptr, size_t /*bytes: the tag knows*/) noexcept {
  auto* tag = reinterpret_cast<Tag*>(static_cast<char*>(ptr) - kAlignment);
  std::lock_guard<std::mutex> lock(mutex_);
  if (Tag* next = physical_next(tag); next && next->free) {
    unlink(next);
    tag->size += next->size;
  }
  if (tag->prev_size) {
    auto* prev = reinterpret_cast<Tag*>(reinterpret_cast<char*>(tag) - tag->prev_size);
    if (prev->free) {
      unlink(prev);
      prev->size += tag->size;
      tag = prev;
    }
  }
  if (Tag* after = physical_next(tag)) after->prev_size = tag->size;
  push_free(tag);
}

ArenaLayout ArenaBackend::layout() {
  std::lock_guard<std::mutex> lock(mutex_);
  ArenaLayout out{capacity_, high_water_, 0, 0, 0};
  for (Tag* t = free_list_; t; t = t->next_free) {
    out.free_bytes += t->size;
    out.largest_free = std::max(out.largest_free, t->size);
    ++out.free_blocks;
  }
  return out;
}

}  // namespace torch_tier
