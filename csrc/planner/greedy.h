// Greedy placement: one pass over the buffers in a fixed order, each at the
// first or best fitting gap among the buffers it meets. Fast (no search), so
// it gives the first upper bound on the peak and a plan for huge inputs.
#pragma once

#include <string>
#include <vector>

#include "planner/problem.h"
#include "planner/sweep.h"

namespace torch_tier::planner {

struct GreedyPlan {
  std::vector<Offset> offsets;
  Offset peak = 0;
  std::string strategy;  // e.g. "best-fit by size"
};

// The lowest-peak plan of eight strategies: first fit or best fit, buffers
// taken by size, area, start time or lifetime length, as many of them as
// finish by `deadline`. If none does, every buffer stacked above the last
// (stacked).
// Every buffer above the one before it: a valid plan in linear time (peak: the sizes' sum).
GreedyPlan stacked(const std::vector<Buffer>& buffers);

GreedyPlan best_greedy(const std::vector<Buffer>& buffers, const Sweep& sweep,
                       Clock::time_point deadline = Clock::time_point::max());

}  // namespace torch_tier::planner
