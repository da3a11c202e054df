// The planner's two entry points: a placement within a given capacity, or a
// placement of minimal peak, each under a time limit. Both start from the
// greedy plan and the lower bound, and validate what they return.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/problem.h"

namespace torch_tier::planner {

struct SolveStats {
  int64_t nodes = 0;       // search nodes, over all probes
  int64_t backtracks = 0;
  int64_t probes = 0;      // capacities searched
  Offset lower_bound = 0;  // the largest sum of sizes live at one moment
  Offset greedy_peak = 0;  // the best greedy strategy's peak
  std::string greedy_strategy;
  bool timed_out = false;       // the time limit cut the search short
  bool search_skipped = false;  // too many buffers to search: greedy only
  double seconds = 0;
};

struct SolveResult {
  bool found = false;       // `offsets` is a valid plan (within the capacity, if any)
  bool optimal = false;     // and its peak is proven minimal
  bool infeasible = false;  // proven: no plan fits the capacity
  std::vector<Offset> offsets;
  Offset peak = 0;
  SolveStats stats;
};

// A placement with every offset + size <= capacity: the greedy one if it
// fits, else the exact search's.
SolveResult fit(const std::vector<Buffer>& buffers, Offset capacity, double time_limit_s);

// A placement of minimal peak. Probes capacities from the lower bound up
// (then by bisection below the best peak found), keeping the best plan found
// so far, so a time limit returns it with `optimal` saying whether it is proven.
SolveResult minimize(const std::vector<Buffer>& buffers, double time_limit_s);

}  // namespace torch_tier::planner
