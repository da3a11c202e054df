#include "numa_backend.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace torch_tier {

namespace {

// From the kernel's uapi <linux/mempolicy.h>, which <numaif.h> (libnuma-dev) repeats.
constexpr int kMpolBind = 2;
constexpr unsigned long kMpolFAddr = 1 << 1;
constexpr const char* kModeNames[] = {"default", "preferred", "bind", "interleave", "local", "preferred_many",
                                      "weighted_interleave"};

constexpr int kWordBits = 8 * sizeof(unsigned long);
using NodeMask = unsigned long[kMaxNumaNodes / kWordBits];

size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

}  // namespace

void bind_to_node(void* address, size_t bytes, int node) {
  if (node < 0 || node >= kMaxNumaNodes)
    throw std::invalid_argument("NUMA node must be from 0 to " + std::to_string(kMaxNumaNodes - 1) + ", got " +
                                std::to_string(node));
  NodeMask mask{};
  mask[node / kWordBits] = 1UL << (node % kWordBits);
  // maxnode is one more than the mask's bits: the kernel reads maxnode - 1 of them.
  if (syscall(SYS_mbind, address, bytes, kMpolBind, mask, kMaxNumaNodes + 1, 0) != 0) {
    const int error = errno;
    throw std::runtime_error("cannot bind " + std::to_string(bytes) + " bytes to NUMA node " + std::to_string(node) +
                             ": mbind: " + std::strerror(error));
  }
}

std::vector<int> page_nodes(const void* address, size_t bytes) {
  const size_t page = page_size();
  const uintptr_t first = reinterpret_cast<uintptr_t>(address) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(address) + bytes;
  std::vector<void*> pages;
  for (uintptr_t p = first; p < end; p += page) pages.push_back(reinterpret_cast<void*>(p));
  std::vector<int> status(pages.size(), 0);
  if (!pages.empty() &&
      syscall(SYS_move_pages, 0, pages.size(), pages.data(), nullptr, status.data(), 0) != 0) {
    const int error = errno;
    throw std::runtime_error(std::string("move_pages (query): ") + std::strerror(error));
  }
  return status;
}

MemoryPolicy memory_policy_at(const void* address) {
  int mode = 0;
  NodeMask mask{};
  if (syscall(SYS_get_mempolicy, &mode, mask, kMaxNumaNodes, address, kMpolFAddr) != 0) {
    const int error = errno;
    throw std::runtime_error(std::string("get_mempolicy: ") + std::strerror(error));
  }
  MemoryPolicy policy;
  const int count = static_cast<int>(sizeof(kModeNames) / sizeof(kModeNames[0]));
  policy.mode = mode >= 0 && mode < count ? kModeNames[mode] : "mode " + std::to_string(mode);
  for (int node = 0; node < kMaxNumaNodes; ++node)
    if (mask[node / kWordBits] >> (node % kWordBits) & 1) policy.nodes.push_back(node);
  return policy;
}

NumaBackend::NumaBackend(int node, size_t capacity, Fit fit)
    : ArenaBackend(capacity, fit, [node](void* memory, size_t bytes) { bind_to_node(memory, bytes, node); }),
      node_(node) {}

std::string NumaBackend::describe() const {
  return "NUMA node " + std::to_string(node_) + ", " + std::to_string(capacity()) + " bytes, " + fit_name(fit()) +
         " fit";
}

}  // namespace torch_tier
