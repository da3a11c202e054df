#include "planner/solver.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <limits>
#include <stdexcept>

#include "planner/deep_stack.h"
#include "planner/greedy.h"
#include "planner/search.h"
#include "planner/sweep.h"

namespace torch_tier::planner {
namespace {

// Past this many buffers a search node (linear in the buffers) is too slow
// to get anywhere: only the greedy plan is offered.
constexpr size_t kMaxSearchBuffers = 100000;

// Stack for the search's recursion: one frame chain per buffer placed.
size_t stack_bytes(size_t num_buffers) { return (size_t{1} << 20) + 1024 * num_buffers; }

// The pre-orders taken in turn (MiniMalloc's defaults).
constexpr std::array<const char*, 3> kPreorders = {"WAT", "TAW", "TWA"};

Clock::time_point deadline_after(Clock::time_point start, double seconds) {
  const std::chrono::duration<double> capped(std::clamp(seconds, 0.0, 1e7));
  return start + std::chrono::duration_cast<Clock::duration>(capped);
}

// Whether the buffers fit below `capacity`. Tries the pre-orders in turn,
// each up to a node limit that doubles every round: on hard inputs one order
// often finishes at once where another would wander for minutes.
Outcome search_in_turns(const std::vector<Buffer>& buffers, const Sweep& sweep, Offset capacity,
                        Clock::time_point deadline, std::vector<Offset>& offsets,
                        SolveStats& stats) {
  SearchCounters counters;
  SearchLimits limits;
  limits.capacity = capacity;
  limits.deadline = deadline;
  limits.node_limit = std::max<int64_t>(static_cast<int64_t>(buffers.size()), 1);
  Outcome outcome = Outcome::kNodeLimit;
  while (outcome == Outcome::kNodeLimit) {
    limits.node_limit = std::min(limits.node_limit * 2, std::numeric_limits<int64_t>::max() / 4);
    for (const char* keys : kPreorders) {
      limits.preorder_keys = keys;
      outcome = search(buffers, sweep, limits, offsets, counters);
      if (outcome != Outcome::kNodeLimit) break;
    }
  }
  ++stats.probes;
  stats.nodes += counters.nodes;
  stats.backtracks += counters.backtracks;
  return outcome;
}

// The shared start of both modes: sweep, lower bound, greedy plan.
struct Start {
  Clock::time_point time = Clock::now();
  Sweep sweep;
  GreedyPlan greedy;
  SolveResult result;
};

// Sweep and greedy stop at the deadline: then the plan is the greedy plans
// finished by then, or the buffers stacked, and there is no search.
Start start(const std::vector<Buffer>& buffers, double time_limit_s) {
  Start s;
  const Clock::time_point deadline = deadline_after(s.time, time_limit_s);
  s.sweep = sweep(buffers, deadline);
  s.greedy = s.sweep.complete ? best_greedy(buffers, s.sweep, deadline) : stacked(buffers);
  s.result.stats.lower_bound = lower_bound(buffers);
  s.result.stats.greedy_peak = s.greedy.peak;
  s.result.stats.greedy_strategy = s.greedy.strategy;
  s.result.stats.search_skipped = buffers.size() > kMaxSearchBuffers || !s.sweep.complete;
  s.result.stats.timed_out = !s.sweep.complete;
  return s;
}

// Validates the plan (a failure here is a planner bug) and fills in the rest.
SolveResult finish(Start& s, const std::vector<Buffer>& buffers, Offset capacity) {
  SolveResult& r = s.result;
  if (r.found) {
    const std::string problem = check_placement(buffers, r.offsets, capacity);
    if (!problem.empty()) throw std::logic_error("planner produced an invalid plan: " + problem);
    r.peak = peak_of(buffers, r.offsets);
    r.optimal = r.optimal || r.peak == r.stats.lower_bound;
  }
  r.stats.seconds = std::chrono::duration<double>(Clock::now() - s.time).count();
  return std::move(r);
}

SolveResult fit_scaled(const std::vector<Buffer>& buffers, Offset capacity, double time_limit_s) {
  Start s = start(buffers, time_limit_s);
  SolveResult& r = s.result;
  if (capacity < r.stats.lower_bound) {
    r.infeasible = true;
  } else if (s.greedy.peak <= capacity) {
    r.found = true;
    r.offsets = std::move(s.greedy.offsets);
  } else if (!r.stats.search_skipped) {
    const Outcome outcome = search_in_turns(buffers, s.sweep, capacity,
                                            deadline_after(s.time, time_limit_s), r.offsets,
                                            r.stats);
    r.found = outcome == Outcome::kFound;
    r.infeasible = outcome == Outcome::kInfeasible;
    r.stats.timed_out = outcome == Outcome::kTimeout;
  }
  return finish(s, buffers, capacity);
}

SolveResult minimize_scaled(const std::vector<Buffer>& buffers, double time_limit_s) {
  Start s = start(buffers, time_limit_s);
  SolveResult& r = s.result;
  const Clock::time_point deadline = deadline_after(s.time, time_limit_s);
  r.found = true;
  r.offsets = std::move(s.greedy.offsets);
  Offset best = s.greedy.peak;
  Offset proven = r.stats.lower_bound;  // every capacity below it is infeasible
  Offset probe_floor = proven;          // capacities below it timed out
  std::vector<Offset> offsets;
  while (proven < best && !r.stats.search_skipped) {
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      r.stats.timed_out = true;
      break;
    }
    // The lower bound first (it is usually reached), then bisection above
    // the capacities that timed out; each probe gets half the time left,
    // except a last try at the lowest open capacity, which gets all of it.
    Offset capacity = proven;
    Clock::time_point probe_deadline = now + (deadline - now) / 2;
    if (r.stats.probes > 0) {
      if (probe_floor < best) {
        capacity = probe_floor + (best - 1 - probe_floor) / 2;
      } else {
        probe_deadline = deadline;
      }
    }
    const Outcome outcome =
        search_in_turns(buffers, s.sweep, capacity, probe_deadline, offsets, r.stats);
    if (outcome == Outcome::kFound) {
      best = peak_of(buffers, offsets);
      r.offsets = offsets;
    } else if (outcome == Outcome::kInfeasible) {
      proven = capacity + 1;
      probe_floor = std::max(probe_floor, proven);
    } else {
      probe_floor = capacity + 1;
    }
  }
  r.optimal = proven >= best;
  return finish(s, buffers, -1);
}

// Back from units of `unit` to bytes.
SolveResult scaled_up(SolveResult r, int64_t unit) {
  for (Offset& offset : r.offsets) offset *= unit;
  r.peak *= unit;
  r.stats.lower_bound *= unit;
  r.stats.greedy_peak *= unit;
  return r;
}

}  // namespace

SolveResult fit(const std::vector<Buffer>& buffers, Offset capacity, double time_limit_s) {
  check_buffers(buffers);
  const int64_t unit = common_unit(buffers);
  SolveResult result;
  run_with_stack(stack_bytes(buffers.size()), [&] {
    result = fit_scaled(scaled_down(buffers, unit), capacity / unit, time_limit_s);
  });
  return scaled_up(std::move(result), unit);
}

SolveResult minimize(const std::vector<Buffer>& buffers, double time_limit_s) {
  check_buffers(buffers);
  const int64_t unit = common_unit(buffers);
  SolveResult result;
  run_with_stack(stack_bytes(buffers.size()), [&] {
    result = minimize_scaled(scaled_down(buffers, unit), time_limit_s);
  });
  return scaled_up(std::move(result), unit);
}

}  // namespace torch_tier::planner
