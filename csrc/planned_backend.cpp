#include "planned_backend.h"

#include <algorithm>
#include <new>
#include <numeric>
#include <stdexcept>

namespace torch_tier {

PlannedBackend::PlannedBackend(Backend* inner, std::vector<size_t> sizes, std::vector<size_t> offsets,
                               size_t arena_bytes)
    : inner_(inner), arena_bytes_(arena_bytes), sizes_(std::move(sizes)), offsets_(std::move(offsets)) {
  if (sizes_.size() != offsets_.size()) throw std::invalid_argument("plan: one offset per size");
  for (size_t i = 0; i < sizes_.size(); ++i) {
    if (offsets_[i] % kAlignment || offsets_[i] + sizes_[i] > arena_bytes_)
      throw std::invalid_argument("plan: offset " + std::to_string(offsets_[i]) + " of slot " +
                                  std::to_string(i) + " is unaligned or past the arena");
  }
  // Slots sorted by offset; each slot's conflicts are those whose space overlaps it.
  std::vector<size_t> by_offset(sizes_.size());
  std::iota(by_offset.begin(), by_offset.end(), 0);
  std::sort(by_offset.begin(), by_offset.end(), [&](size_t a, size_t b) { return offsets_[a] < offsets_[b]; });
  std::vector<std::vector<size_t>> overlaps(sizes_.size());
  for (size_t i = 0; i < by_offset.size(); ++i) {
    const size_t a = by_offset[i];
    for (size_t j = i + 1; j < by_offset.size() && offsets_[by_offset[j]] < offsets_[a] + sizes_[a]; ++j) {
      overlaps[a].push_back(by_offset[j]);
      overlaps[by_offset[j]].push_back(a);
    }
  }
  conflict_start_.push_back(0);
  for (const auto& list : overlaps) {
    conflicts_.insert(conflicts_.end(), list.begin(), list.end());
    conflict_start_.push_back(conflicts_.size());
  }
  distinct_offsets_ = offsets_;
  std::sort(distinct_offsets_.begin(), distinct_offsets_.end());
  distinct_offsets_.erase(std::unique(distinct_offsets_.begin(), distinct_offsets_.end()),
                          distinct_offsets_.end());
  live_at_.assign(distinct_offsets_.size(), -1);
  live_.assign(sizes_.size(), 0);
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

size_t PlannedBackend::offset_rank(size_t offset) const {
  return std::lower_bound(distinct_offsets_.begin(), distinct_offsets_.end(), offset) -
         distinct_offsets_.begin();
}

bool PlannedBackend::space_free(size_t slot) const {
  if (live_at_[offset_rank(offsets_[slot])] >= 0) return false;
  for (size_t k = conflict_start_[slot]; k < conflict_start_[slot + 1]; ++k)
    if (live_[conflicts_[k]]) return false;
  return true;
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
        live_[slot] = 1;
        live_at_[offset_rank(offsets_[slot])] = static_cast<int64_t>(slot);
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
  live_[live_at_[rank]] = 0;
  live_at_[rank] = -1;
}

PlannedStats PlannedBackend::stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  return {planned_, unplanned_, static_cast<int64_t>(arena_bytes_)};
}

}  // namespace torch_tier
