// The slow tier as one NUMA node's memory: a CXL memory expander or a PM
// node (both appear as CPU-less nodes), or a remote socket. It is the
// simulated tier's arena (its cells, out-of-band treap and fit rules) on a
// mapping bound to the node with mbind(MPOL_BIND) before anything touches
// it, so every page of a block faults in on that node and nowhere else. The
// arena's bookkeeping lives in its own mapping, in ordinary memory.
//
// The kernel's NUMA calls are made as raw syscalls (mbind, move_pages,
// get_mempolicy: a stable ABI since Linux 2.6.18), so neither the build nor
// the run needs libnuma.
#pragma once
#include <string>
#include <vector>

#include "arena_backend.h"

namespace torch_tier {

constexpr int kMaxNumaNodes = 1024;  // the kernel's largest node count (NODES_SHIFT 10)

// Binds [address, address + bytes) (page-aligned, not yet touched) to `node`:
// its pages fault in on that node only. Throws std::invalid_argument for a
// node outside [0, kMaxNumaNodes), std::runtime_error naming the node and
// the kernel's error when mbind refuses (e.g. a node without memory).
void bind_to_node(void* address, size_t bytes, int node);

// The node of each page of [address, address + bytes) (move_pages in query
// mode); -ENOENT for a page not yet touched, another -errno for one that
// cannot be queried.
std::vector<int> page_nodes(const void* address, size_t bytes);

struct MemoryPolicy {
  std::string mode;        // "default", "bind", "interleave", ... (the MPOL_ mode, lower case)
  std::vector<int> nodes;  // the policy's nodes (none for "default")
};
// The memory policy that governs the page at `address` (get_mempolicy with MPOL_F_ADDR).
MemoryPolicy memory_policy_at(const void* address);

class NumaBackend final : public ArenaBackend {
 public:
  // An arena of `capacity` bytes on NUMA node `node` (exceptions as
  // ArenaBackend's and bind_to_node's).
  NumaBackend(int node, size_t capacity, Fit fit);
  std::string describe() const override;

 private:
  int node_;
};

}  // namespace torch_tier
