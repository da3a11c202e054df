// The static pre-ordering: the order in which the search tries buffers that
// share a lowest feasible offset. MiniMalloc's ablation shows the search fails
// on hard inputs without a good one; no single order wins everywhere, so the
// solver takes turns between a few (see solver.cpp).
#pragma once

#include <string_view>
#include <vector>

#include "planner/problem.h"
#include "planner/sweep.h"

namespace torch_tier::planner {

// `members` sorted by the keys in `keys`, each descending, ties by index:
//   W  lifetime length (upper - lower)
//   A  area (size x lifetime length)
//   T  total: the largest sum of still-unplaced sizes in any of its sections
//   Z  size
// `section_totals[s]` is the current sum of unplaced sizes in section s.
std::vector<int> preorder(const std::vector<int>& members, const std::vector<Buffer>& buffers,
                          const Sweep& sweep, const std::vector<Offset>& section_totals,
                          std::string_view keys);

}  // namespace torch_tier::planner
