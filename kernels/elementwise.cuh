// kernels/elementwise.cuh — launchers for the elementwise CUDA kernels.
//
// Launchers take raw device pointers and a stream and only enqueue work;
// argument checks and error reporting belong to the callers in
// src/exec/cuda, which own the buffers (and so the element counts).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace synk::kernels {

// y[i] = value for i < n.
void fill(float* y, int64_t n, float value, cudaStream_t stream);
// y[i] = a * x[i] + y[i] for i < n.
void axpy(int64_t n, float a, const float* x, float* y, cudaStream_t stream);

}  // namespace synk::kernels
