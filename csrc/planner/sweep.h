// A sweep over the buffers' lifetimes: the cross sections (sets of buffers
// live together at one moment), which buffers overlap in time, and the
// partitions of buffers that never meet and so can be solved apart.
#pragma once

#include <vector>

#include "planner/problem.h"

namespace torch_tier::planner {

// A group of buffers and the half-open range of sections they span.
struct Partition {
  std::vector<int> buffers;
  int first_section = 0;
  int last_section = 0;
};

struct Sweep {
  // sections[s]: the buffers live at one moment, just before a buffer ends.
  // Every moment's live set is contained in some section.
  std::vector<std::vector<int>> sections;
  // Buffer b lives in the sections [first_section[b], last_section[b]).
  std::vector<int> first_section;
  std::vector<int> last_section;
  // overlaps[b]: every other buffer live at some moment together with b.
  std::vector<std::vector<int>> overlaps;
  // Groups of buffers with no moment in common with any other group.
  std::vector<Partition> partitions;

  // False if the deadline passed before the sweep ended: the fields above are partial.
  bool complete = true;

  // cuts[s]: how many buffers live in both section s and section s + 1.
  std::vector<int> cuts() const;
};

// Its work grows with the pairs of buffers live together, which can be most pairs.
Sweep sweep(const std::vector<Buffer>& buffers, Clock::time_point deadline = Clock::time_point::max());

// The largest sum of sizes live at one moment: no placement can peak lower.
Offset lower_bound(const std::vector<Buffer>& buffers);

}  // namespace torch_tier::planner
