// The exact search (MiniMalloc's algorithm): is there a placement of every
// buffer below a given capacity? Depth-first over canonical solutions only,
// with cross-section inference, dominance pruning, and decomposition into
// independent sections as buffers are placed.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "planner/problem.h"
#include "planner/sweep.h"

namespace torch_tier::planner {

enum class Outcome {
  kFound,       // a placement below the capacity exists (and was returned)
  kInfeasible,  // proven: none exists
  kNodeLimit,   // gave up after node_limit nodes, nothing proven
  kTimeout,     // gave up at the deadline, nothing proven
};

struct SearchLimits {
  Offset capacity = 0;
  std::string preorder_keys = "WAT";  // see preorder.h
  int64_t node_limit = std::numeric_limits<int64_t>::max();
  Clock::time_point deadline = Clock::time_point::max();
};

struct SearchCounters {
  int64_t nodes = 0;       // search nodes visited
  int64_t backtracks = 0;  // nodes all of whose children failed
};

// Searches for offsets placing every buffer in [0, limits.capacity). On kFound
// `offsets` holds them; otherwise it is left unspecified. Adds to `counters`.
Outcome search(const std::vector<Buffer>& buffers, const Sweep& sweep, const SearchLimits& limits,
               std::vector<Offset>& offsets, SearchCounters& counters);

}  // namespace torch_tier::planner
