// kernels/launch.cuh — launch-shape helpers shared by the kernel files
// (device code only; include from .cu files) and the one launch macro.
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

// SYNK_LAUNCH(kernel, grid, block, smem, stream)(args...) launches a kernel:
// kernel<<<grid, block, smem, stream>>>(args...) under nvcc; in the CUDA
// emulation for tests (SYNK_CUDA_EMU: .cu files compiled as C++ under
// tests/cuda_emu/kernel_emu.hpp) the emulated launch, which runs the grid on
// the CPU in stream order. Every launch site uses it, so the same sources
// build both ways. The kernel argument must hold no top-level comma (the
// preprocessor would split it): name such a template instance by an alias.
#if defined(__CUDACC__)
#define SYNK_LAUNCH(k, grid, block, smem, stream) k<<<grid, block, smem, stream>>>
#elif defined(SYNK_CUDA_EMU_KERNELS)
#define SYNK_LAUNCH(k, grid, block, smem, stream) ::synk_emu::kernel::Launch<&k>(grid, block, smem, stream)
#else
#error "kernels/*.cu compile with nvcc, or as C++ under tests/cuda_emu/kernel_emu.hpp (SYNK_CUDA_EMU)"
#endif

#define SYNK_GRID_LOOP(i, n)                                                   \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n);   \
       i += int64_t(gridDim.x) * blockDim.x)

}  // namespace synk::kernels
