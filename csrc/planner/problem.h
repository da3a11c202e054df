// The static planning problem: buffers with known lifetimes and sizes, and the
// checks that an input is well formed and that a placement is valid.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace torch_tier::planner {

using Clock = std::chrono::steady_clock;  // the solver's deadlines

using Offset = int64_t;
using TimeValue = int64_t;

// A buffer live on the half-open interval [lower, upper), `size` bytes long,
// to be placed at an offset that is a multiple of `alignment`.
struct Buffer {
  TimeValue lower = 0;
  TimeValue upper = 0;
  int64_t size = 0;
  int64_t alignment = 1;

  TimeValue width() const { return upper - lower; }
  // Space x time; a double because it only orders buffers and must not overflow.
  double area() const { return static_cast<double>(size) * static_cast<double>(width()); }
};

// Throws std::invalid_argument naming the first buffer that is not well formed
// (empty or negative lifetime, size <= 0, alignment <= 0).
void check_buffers(const std::vector<Buffer>& buffers);

// The smallest multiple of `alignment` that is >= `offset`.
Offset align_up(Offset offset, int64_t alignment);

// The greatest common divisor of every size and alignment. Every offset of a
// valid placement is a multiple of each buffer's alignment, so dividing sizes
// and alignments by it (and the capacity, rounding down) gives an equivalent
// problem; when sizes are multiples of one shared alignment it removes
// alignment altogether, which the search's bounds handle far better.
int64_t common_unit(const std::vector<Buffer>& buffers);

// The buffers with sizes and alignments divided by `unit` (a common divisor).
std::vector<Buffer> scaled_down(const std::vector<Buffer>& buffers, int64_t unit);

// The highest address any buffer reaches: max(offset + size).
Offset peak_of(const std::vector<Buffer>& buffers, const std::vector<Offset>& offsets);

// Returns "" when `offsets` is a valid placement (aligned, non-negative, no two
// buffers overlapping in both time and space, and every offset + size <=
// capacity unless capacity < 0), else a sentence saying what is wrong.
std::string check_placement(const std::vector<Buffer>& buffers,
                            const std::vector<Offset>& offsets, Offset capacity);

}  // namespace torch_tier::planner
