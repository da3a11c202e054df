#include "bindings.h"

namespace torch_tier {
void bind_planner(pybind11::module_& m) {}
}  // namespace torch_tier
