#include "planner/problem.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace torch_tier::planner {

void check_buffers(const std::vector<Buffer>& buffers) {
  for (size_t i = 0; i < buffers.size(); ++i) {
    const Buffer& b = buffers[i];
    const std::string where = "buffer " + std::to_string(i) + ": ";
    if (b.upper <= b.lower) {
      throw std::invalid_argument(where + "empty or negative lifetime [" +
                                  std::to_string(b.lower) + ", " + std::to_string(b.upper) + ")");
    }
    if (b.size <= 0) throw std::invalid_argument(where + "size must be positive");
    if (b.alignment <= 0) throw std::invalid_argument(where + "alignment must be positive");
  }
}

Offset align_up(Offset offset, int64_t alignment) {
  const Offset rest = offset % alignment;
  return rest == 0 ? offset : offset + (alignment - rest);
}

int64_t common_unit(const std::vector<Buffer>& buffers) {
  int64_t unit = 0;
  for (const Buffer& b : buffers) unit = std::gcd(std::gcd(unit, b.size), b.alignment);
  return std::max<int64_t>(unit, 1);
}

std::vector<Buffer> scaled_down(const std::vector<Buffer>& buffers, int64_t unit) {
  std::vector<Buffer> scaled = buffers;
  for (Buffer& b : scaled) {
    b.size /= unit;
    b.alignment /= unit;
  }
  return scaled;
}

Offset peak_of(const std::vector<Buffer>& buffers, const std::vector<Offset>& offsets) {
  Offset peak = 0;
  for (size_t i = 0; i < buffers.size(); ++i) peak = std::max(peak, offsets[i] + buffers[i].size);
  return peak;
}

std::string check_placement(const std::vector<Buffer>& buffers,
                            const std::vector<Offset>& offsets, Offset capacity) {
  if (offsets.size() != buffers.size()) return "wrong number of offsets";
  for (size_t i = 0; i < buffers.size(); ++i) {
    const Buffer& b = buffers[i];
    if (offsets[i] < 0) return "buffer " + std::to_string(i) + " has a negative offset";
    if (offsets[i] % b.alignment != 0) return "buffer " + std::to_string(i) + " is misaligned";
    if (capacity >= 0 && offsets[i] + b.size > capacity) {
      return "buffer " + std::to_string(i) + " exceeds the capacity";
    }
  }
  // Sweep in order of start time; `live` holds the buffers started and not yet ended.
  std::vector<size_t> order(buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return buffers[a].lower < buffers[b].lower; });
  std::vector<size_t> live;
  for (const size_t i : order) {
    const Buffer& b = buffers[i];
    live.erase(std::remove_if(live.begin(), live.end(),
                              [&](size_t j) { return buffers[j].upper <= b.lower; }),
               live.end());
    for (const size_t j : live) {
      if (offsets[j] < offsets[i] + b.size && offsets[i] < offsets[j] + buffers[j].size) {
        return "buffers " + std::to_string(j) + " and " + std::to_string(i) +
               " overlap in time and space";
      }
    }
    live.push_back(i);
  }
  return "";
}

}  // namespace torch_tier::planner
