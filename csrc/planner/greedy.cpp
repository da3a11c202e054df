#include "planner/greedy.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <numeric>
#include <utility>

namespace torch_tier::planner {
namespace {

enum class Fit { kFirst, kBest };

using Range = std::pair<Offset, Offset>;  // [begin, end) in address space

// Where `b` goes among the address ranges `taken` (sorted by begin) by the
// buffers it meets: the lowest gap that holds it (first fit) or the tightest
// one (best fit), else just above everything.
Offset fit_offset(const Buffer& b, const std::vector<Range>& taken, Fit fit) {
  Offset cursor = 0;  // everything below is either gap already seen or taken
  Offset best = -1;
  Offset best_gap = std::numeric_limits<Offset>::max();
  for (const auto& [begin, end] : taken) {
    const Offset start = align_up(cursor, b.alignment);
    if (start + b.size <= begin) {
      if (fit == Fit::kFirst) return start;
      if (begin - cursor < best_gap) {
        best_gap = begin - cursor;
        best = start;
      }
    }
    cursor = std::max(cursor, end);
  }
  return best >= 0 ? best : align_up(cursor, b.alignment);
}

// Offsets for the buffers placed in `order`; empty if `deadline` passes first.
std::vector<Offset> place_in_order(const std::vector<Buffer>& buffers, const Sweep& sweep,
                                   const std::vector<int>& order, Fit fit, Clock::time_point deadline) {
  constexpr size_t kClockEvery = 256;  // buffers placed between looks at the clock
  std::vector<Offset> offsets(buffers.size(), -1);
  std::vector<Range> taken;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i % kClockEvery == 0 && Clock::now() >= deadline) return {};
    const int b = order[i];
    taken.clear();
    for (const int other : sweep.overlaps[b]) {
      if (offsets[other] < 0) continue;
      taken.emplace_back(offsets[other], offsets[other] + buffers[other].size);
    }
    std::sort(taken.begin(), taken.end());
    offsets[b] = fit_offset(buffers[b], taken, fit);
  }
  return offsets;
}

using Before = std::function<bool(const Buffer&, const Buffer&)>;

// Sorting orders, each a known good rule for interval packing; ties by index.
std::vector<std::pair<std::string, Before>> orders() {
  return {
      {"size", [](const Buffer& a, const Buffer& b) { return a.size > b.size; }},
      {"area", [](const Buffer& a, const Buffer& b) { return a.area() > b.area(); }},
      {"start", [](const Buffer& a, const Buffer& b) { return a.lower < b.lower; }},
      {"lifetime", [](const Buffer& a, const Buffer& b) { return a.width() > b.width(); }},
  };
}

}  // namespace

// Every buffer above the one before it, aligned: a valid plan in linear time.
GreedyPlan stacked(const std::vector<Buffer>& buffers) {
  GreedyPlan plan;
  plan.offsets.reserve(buffers.size());
  for (const Buffer& b : buffers) {
    plan.offsets.push_back(align_up(plan.peak, b.alignment));
    plan.peak = plan.offsets.back() + b.size;
  }
  plan.strategy = "stacked (the time limit ran out before a greedy plan)";
  return plan;
}

GreedyPlan best_greedy(const std::vector<Buffer>& buffers, const Sweep& sweep, Clock::time_point deadline) {
  GreedyPlan best;
  best.peak = std::numeric_limits<Offset>::max();
  for (const auto& [name, before] : orders()) {
    std::vector<int> order(buffers.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&, &before = before](int a, int b) {
      return before(buffers[a], buffers[b]);
    });
    for (const Fit fit : {Fit::kFirst, Fit::kBest}) {
      std::vector<Offset> offsets = place_in_order(buffers, sweep, order, fit, deadline);
      if (offsets.size() != buffers.size()) return best.offsets.size() == buffers.size() ? best : stacked(buffers);
      const Offset peak = peak_of(buffers, offsets);
      if (peak < best.peak) {
        best.offsets = std::move(offsets);
        best.peak = peak;
        best.strategy = std::string(fit == Fit::kFirst ? "first" : "best") + "-fit by " + name;
      }
    }
  }
  if (buffers.empty()) best.peak = 0;
  return best;
}

}  // namespace torch_tier::planner
