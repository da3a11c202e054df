// torch_tier._planner: the static memory planner as its own small module.
// Plain pybind11, no libtorch, so `torch-tier plan` starts without loading torch.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <stdexcept>
#include <vector>

#include "planner/solver.h"

namespace py = pybind11;
namespace planner = torch_tier::planner;
namespace {

std::vector<planner::Buffer> to_buffers(const std::vector<int64_t>& lowers,
                                        const std::vector<int64_t>& uppers,
                                        const std::vector<int64_t>& sizes,
                                        const std::vector<int64_t>& alignments) {
  const size_t n = lowers.size();
  if (uppers.size() != n || sizes.size() != n || alignments.size() != n) {
    throw std::invalid_argument("lowers, uppers, sizes and alignments differ in length");
  }
  std::vector<planner::Buffer> buffers(n);
  for (size_t i = 0; i < n; ++i) buffers[i] = {lowers[i], uppers[i], sizes[i], alignments[i]};
  return buffers;
}

py::dict to_dict(const planner::SolveResult& r) {
  const planner::SolveStats& s = r.stats;
  py::dict d;
  d["found"] = r.found;
  d["optimal"] = r.optimal;
  d["infeasible"] = r.infeasible;
  d["offsets"] = r.offsets;
  d["peak"] = r.peak;
  d["lower_bound"] = s.lower_bound;
  d["greedy_peak"] = s.greedy_peak;
  d["greedy_strategy"] = s.greedy_strategy;
  d["nodes"] = s.nodes;
  d["backtracks"] = s.backtracks;
  d["probes"] = s.probes;
  d["timed_out"] = s.timed_out;
  d["search_skipped"] = s.search_skipped;
  d["seconds"] = s.seconds;
  return d;
}

}  // namespace

PYBIND11_MODULE(_planner, m) {
  m.doc() = "torch-tier's static memory planner (MiniMalloc's algorithm)";
  m.def(
      "plan_offsets",
      [](const std::vector<int64_t>& lowers, const std::vector<int64_t>& uppers,
         const std::vector<int64_t>& sizes, const std::vector<int64_t>& alignments,
         std::optional<int64_t> capacity, double time_limit) {
        const std::vector<planner::Buffer> buffers =
            to_buffers(lowers, uppers, sizes, alignments);
        planner::SolveResult result;
        {
          py::gil_scoped_release release;
          result = capacity ? planner::fit(buffers, *capacity, time_limit)
                            : planner::minimize(buffers, time_limit);
        }
        return to_dict(result);
      },
      py::arg("lowers"), py::arg("uppers"), py::arg("sizes"), py::arg("alignments"),
      py::arg("capacity"), py::arg("time_limit"),
      "Plans offsets for buffers live on [lower, upper): within `capacity`, or of minimal "
      "peak when it is None. Returns a dict (found, optimal, infeasible, offsets, peak, "
      "lower_bound, greedy_peak, greedy_strategy, nodes, backtracks, probes, timed_out, "
      "search_skipped, seconds). Raises ValueError on malformed buffers.");
}
