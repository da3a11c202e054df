// Each part of torch_tier._C registers its Python functions here.
#pragma once
#include <pybind11/pybind11.h>

namespace torch_tier {
void bind_allocator(pybind11::module_& m);
}  // namespace torch_tier
