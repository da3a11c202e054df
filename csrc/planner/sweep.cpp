#include "planner/sweep.h"

#include <algorithm>
#include <tuple>

namespace torch_tier::planner {
namespace {

// A lifetime endpoint. At equal times ends come first: lifetimes are half-open,
// so a buffer ending at t never meets one starting at t.
struct Event {
  TimeValue time;
  bool is_start;
  int buffer;
  bool operator<(const Event& o) const {
    return std::tie(time, is_start, buffer) < std::tie(o.time, o.is_start, o.buffer);
  }
};

std::vector<Event> events_of(const std::vector<Buffer>& buffers) {
  std::vector<Event> events;
  events.reserve(2 * buffers.size());
  for (int b = 0; b < static_cast<int>(buffers.size()); ++b) {
    events.push_back({buffers[b].lower, true, b});
    events.push_back({buffers[b].upper, false, b});
  }
  std::sort(events.begin(), events.end());
  return events;
}

// The set of live buffers, with O(1) insertion and removal.
class LiveSet {
 public:
  explicit LiveSet(size_t n) : position_(n, -1) {}
  void insert(int b) {
    position_[b] = static_cast<int>(items_.size());
    items_.push_back(b);
  }
  void erase(int b) {
    const int last = items_.back();
    items_[position_[b]] = last;
    position_[last] = position_[b];
    items_.pop_back();
    position_[b] = -1;
  }
  const std::vector<int>& items() const { return items_; }

 private:
  std::vector<int> items_;
  std::vector<int> position_;
};

}  // namespace

Sweep sweep(const std::vector<Buffer>& buffers, Clock::time_point deadline) {
  constexpr size_t kClockEvery = 256;  // events between looks at the clock
  const size_t n = buffers.size();
  Sweep result;
  result.first_section.assign(n, 0);
  result.last_section.assign(n, 0);
  result.overlaps.resize(n);
  LiveSet live(n);
  bool section_open = false;  // a buffer started since the last section was cut
  const std::vector<Event> events = events_of(buffers);
  for (size_t i = 0; i < events.size(); ++i) {
    if (i % kClockEvery == 0 && Clock::now() >= deadline) {
      result.complete = false;
      return result;
    }
    const Event& e = events[i];
    const int b = e.buffer;
    const int num_sections = static_cast<int>(result.sections.size());
    if (e.is_start) {
      if (live.items().empty()) {
        result.partitions.push_back({{}, num_sections, num_sections});
      }
      result.partitions.back().buffers.push_back(b);
      for (const int other : live.items()) {
        result.overlaps[other].push_back(b);
        result.overlaps[b].push_back(other);
      }
      live.insert(b);
      result.first_section[b] = num_sections;
      section_open = true;
      continue;
    }
    // The first end after a start closes a section: the live set is maximal here.
    if (section_open) {
      std::vector<int> section = live.items();
      std::sort(section.begin(), section.end());
      result.sections.push_back(std::move(section));
      section_open = false;
    }
    live.erase(b);
    result.last_section[b] = static_cast<int>(result.sections.size());
    if (live.items().empty()) {
      result.partitions.back().last_section = static_cast<int>(result.sections.size());
    }
  }
  for (std::vector<int>& others : result.overlaps) std::sort(others.begin(), others.end());
  return result;
}

std::vector<int> Sweep::cuts() const {
  std::vector<int> cuts(sections.empty() ? 0 : sections.size() - 1, 0);
  for (size_t b = 0; b < first_section.size(); ++b) {
    for (int s = first_section[b]; s + 1 < last_section[b]; ++s) ++cuts[s];
  }
  return cuts;
}

Offset lower_bound(const std::vector<Buffer>& buffers) {
  Offset live = 0;
  Offset bound = 0;
  for (const Event& e : events_of(buffers)) {
    live += e.is_start ? buffers[e.buffer].size : -buffers[e.buffer].size;
    bound = std::max(bound, live);
  }
  return bound;
}

}  // namespace torch_tier::planner
