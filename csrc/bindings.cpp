#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "torch-tier's C++ core: the tiering CPU allocator";
  torch_tier::bind_allocator(m);
}
