// kernels/launch.cuh — launch-shape helpers shared by the kernel files
// (device code only; include from .cu files).
//
// Grid-stride loops with a capped grid: one launch shape serves every size,
// and 64-bit indices keep tensors over 2^31 elements correct.
#pragma once

#include <algorithm>
#include <cstdint>

namespace synk::kernels {

inline constexpr int kThreads = 256;

inline int grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::clamp<int64_t>(b, 1, 65535));
}

#define SYNK_GRID_LOOP(i, n)                                                   \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n);   \
       i += int64_t(gridDim.x) * blockDim.x)

}  // namespace synk::kernels
