#include "planned_backend.h"

#include <algorithm>
#include <new>
#include <stdexcept>

namespace torch_tier {

RankSet::RankSet(size_t n) {
  do {
    n = (n + 63) / 64;
    levels_.emplace_back(std::max<size_t>(n, 1), 0);
  } while (n > 1);
}

void RankSet::insert(size_t i) noexcept {
  for (auto& level : levels_) {
    const bool was_empty = level[i / 64] == 0;
    level[i / 64] |= uint64_t{1} << (i % 64);
    if (!was_empty) return;
    i /= 64;
  }
}

void RankSet::erase(size_t i) noexcept {
  for (auto& level : levels_) {
    level[i / 64] &= ~(uint64_t{1} << (i % 64));
    if (level[i / 64]) return;
    i /= 64;
  }
}

int64_t RankSet::prev(int64_t i) const noexcept {
  // Climb until a word holds a member at or before the position, then descend to the largest one.
  size_t depth = 0;
  for (; depth < levels_.size(); ++depth) {
    if (i < 0) return -1;
    const uint64_t word = levels_[depth][i / 64];
    const uint64_t mask = (i % 64 == 63) ? ~uint64_t{0} : (uint64_t{2} << (i % 64)) - 1;
    if (word & mask) {
      i = (i / 64) * 64 + (63 - __builtin_clzll(word & mask));
      break;
    }
    i = i / 64 - 1;  // the words before this one, one level up
  }
  if (depth == levels_.size()) return -1;
  while (depth-- > 0) {
    const uint64_t word = levels_[depth][i];
    i = i * 64 + (63 - __builtin_clzll(word));
  }
  return i;
}

PlannedBackend::PlannedBackend(Backend* inner, std::vector<size_t> sizes, std::vector<size_t> offsets,
                               size_t arena_bytes, size_t alignment)
    : inner_(inner), arena_bytes_(arena_bytes), alignment_(alignment), sizes_(std::move(sizes)),
      offsets_(std::move(offsets)), live_ranks_(0) {
  if (sizes_.size() != offsets_.size()) throw std::invalid_argument("plan: one offset per size");
  for (size_t i = 0; i < sizes_.size(); ++i) {
    if (offsets_[i] % alignment_ || sizes_[i] == 0 || offsets_[i] + sizes_[i] > arena_bytes_)
      throw std::invalid_argument("plan: slot " + std::to_string(i) + " (offset " + std::to_string(offsets_[i]) +
                                  ", " + std::to_string(sizes_[i]) + " bytes) is empty, not a multiple of " +
                                  std::to_string(alignment_) + " bytes or past the arena");
  }
  distinct_offsets_ = offsets_;
  std::sort(distinct_offsets_.begin(), distinct_offsets_.end());
  distinct_offsets_.erase(std::unique(distinct_offsets_.begin(), distinct_offsets_.end()), distinct_offsets_.end());
  live_at_.assign(distinct_offsets_.size(), -1);
  live_ranks_ = RankSet(distinct_offsets_.size());
  region_ = static_cast<char*>(inner_->allocate(std::max<size_t>(arena_bytes_, kAlignment)));
  if (!region_) throw std::bad_alloc();
  inner_->retain();
}

PlannedBackend::~PlannedBackend() {
  inner_->deallocate(region_, std::max<size_t>(arena_bytes_, kAlignment));
  inner_->release();
}

std::string PlannedBackend::describe() const {
  return "planned arena of " + std::to_string(arena_bytes_) + " bytes in " + inner_->describe();
}

bool PlannedBackend::in_region(const void* ptr) const {
  const char* p = static_cast<const char*>(ptr);
  return p >= region_ && p < region_ + arena_bytes_;
}

size_t PlannedBackend::block_bytes(const void* ptr, size_t bytes) const noexcept {
  return in_region(ptr) ? round_up(bytes, alignment_) : inner_->block_bytes(ptr, bytes);
}

size_t PlannedBackend::offset_rank(size_t offset) const {
  return std::lower_bound(distinct_offsets_.begin(), distinct_offsets_.end(), offset) - distinct_offsets_.begin();
}

bool PlannedBackend::space_free(size_t slot) const {
  const size_t start = offsets_[slot], end = start + sizes_[slot];
  // The live block that starts last before `end`; blocks starting earlier end before it starts.
  const int64_t rank = live_ranks_.prev(static_cast<int64_t>(offset_rank(end)) - 1);
  if (rank < 0) return true;
  const auto live = static_cast<size_t>(live_at_[rank]);
  return offsets_[live] + sizes_[live] <= start;
}

void PlannedBackend::begin() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  cursor_ = 0;
  on_plan_ = true;
}

void* PlannedBackend::allocate(size_t bytes) noexcept {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (on_plan_ && cursor_ < sizes_.size() && sizes_[cursor_] == bytes) {
      const size_t slot = cursor_++;
      if (space_free(slot)) {
        const size_t rank = offset_rank(offsets_[slot]);
        live_at_[rank] = static_cast<int64_t>(slot);
        live_ranks_.insert(rank);
        ++planned_;
        return region_ + offsets_[slot];
      }
    } else {
      on_plan_ = false;  // the forward no longer follows the plan
    }
    ++unplanned_;
  }
  return inner_->allocate(bytes);
}

void PlannedBackend::deallocate(void* ptr, size_t bytes) noexcept {
  if (!in_region(ptr)) return inner_->deallocate(ptr, bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t rank = offset_rank(static_cast<char*>(ptr) - region_);
  live_at_[rank] = -1;
  live_ranks_.erase(rank);
}

PlannedStats PlannedBackend::stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  return {planned_, unplanned_, static_cast<int64_t>(arena_bytes_)};
}

}  // namespace torch_tier
