// exec/cuda/elementwise.cu — argument checks and error handling around the
// elementwise kernels (kernels/elementwise.cu).
//
// The calls synchronise so that an asynchronous kernel fault is reported
// here, naming the op, rather than at some later unrelated call; the
// executor will batch work on streams once it exists.
#include "exec/cuda/elementwise.hpp"

#include <cuda_runtime.h>

#include <string>

#include "elementwise.cuh"
#include "exec/cuda/handles.hpp"

namespace synk::cuda {

void fill(DeviceArray<float>& y, float value) {
  if (y.size() == 0) return;
  DeviceScope scope(y.device());
  kernels::fill(y.data(), static_cast<int64_t>(y.size()), value, nullptr);
  SYNK_CUDA_CHECK(cudaGetLastError());
  SYNK_CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

void axpy(float a, const DeviceArray<float>& x, DeviceArray<float>& y) {
  if (x.size() != y.size())
    throw ArgumentError("cuda::axpy: x has " + std::to_string(x.size()) +
                        " elements, y has " + std::to_string(y.size()));
  if (y.size() == 0) return;
  if (x.device() != y.device())
    throw ArgumentError("cuda::axpy: x is on device " + std::to_string(x.device()) +
                        ", y on device " + std::to_string(y.device()));
  DeviceScope scope(y.device());
  kernels::axpy(static_cast<int64_t>(y.size()), a, x.data(), y.data(), nullptr);
  SYNK_CUDA_CHECK(cudaGetLastError());
  SYNK_CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

}  // namespace synk::cuda
