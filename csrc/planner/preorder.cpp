#include "planner/preorder.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace torch_tier::planner {
namespace {

struct Keys {
  double width = 0;
  double area = 0;
  double total = 0;
  double size = 0;
  int buffer = 0;

  double get(char key) const {
    switch (key) {
      case 'W': return width;
      case 'A': return area;
      case 'T': return total;
      case 'Z': return size;
    }
    throw std::invalid_argument(std::string("unknown pre-ordering key '") + key + "'");
  }
};

Keys keys_of(int b, const std::vector<Buffer>& buffers, const Sweep& sweep,
             const std::vector<Offset>& section_totals) {
  Offset total = 0;
  for (int s = sweep.first_section[b]; s < sweep.last_section[b]; ++s) {
    total = std::max(total, section_totals[s]);
  }
  const Buffer& buffer = buffers[b];
  return {static_cast<double>(buffer.width()), buffer.area(), static_cast<double>(total),
          static_cast<double>(buffer.size), b};
}

}  // namespace

std::vector<int> preorder(const std::vector<int>& members, const std::vector<Buffer>& buffers,
                          const Sweep& sweep, const std::vector<Offset>& section_totals,
                          std::string_view keys) {
  std::vector<Keys> items;
  items.reserve(members.size());
  for (const int b : members) items.push_back(keys_of(b, buffers, sweep, section_totals));
  std::sort(items.begin(), items.end(), [keys](const Keys& a, const Keys& b) {
    for (const char key : keys) {
      const double x = a.get(key), y = b.get(key);
      if (x != y) return x > y;
    }
    return a.buffer < b.buffer;
  });
  std::vector<int> order;
  order.reserve(items.size());
  for (const Keys& item : items) order.push_back(item.buffer);
  return order;
}

}  // namespace torch_tier::planner
