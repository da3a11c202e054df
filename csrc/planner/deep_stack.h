// Running a deeply recursive function safely. The exact search recurses once
// per buffer placed (about 450 bytes of stack each), so thousands of buffers
// would overflow a small thread stack; it runs on a thread sized for it.
#pragma once

#include <cstddef>
#include <functional>

namespace torch_tier::planner {

// Runs `fn` to completion on a new thread with a stack of at least `bytes`
// and rethrows whatever it throws.
void run_with_stack(size_t bytes, const std::function<void()>& fn);

}  // namespace torch_tier::planner
