// exec/cuda/elementwise.hpp — elementwise operations on device arrays, the
// first ops of the CUDA executor (the full executor comes with the GPU
// runtime). They check their operands, launch the kernels in kernels/ and
// report failures as BackendError. Like device.hpp, host-compiler safe.
//
//   synk::cuda::DeviceArray<float> x(n), y(n);
//   synk::cuda::fill(y, 1.f);
//   synk::cuda::axpy(2.f, x, y);     // y = 2 x + y, finished on return
#pragma once

#include "exec/cuda/device.hpp"

namespace synk::cuda {

// y[i] = value. Synchronous.
void fill(DeviceArray<float>& y, float value);
// y = a * x + y. x and y must have one size and live on one device.
// Synchronous.
void axpy(float a, const DeviceArray<float>& x, DeviceArray<float>& y);

}  // namespace synk::cuda
