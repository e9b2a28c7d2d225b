// src/cuda/stream.cpp — DeviceScope and Stream (cuda/stream.hpp). Built
// only with CUDA (SYNK_HAVE_CUDA).
#include "synk/config.hpp"

#if SYNK_HAVE_CUDA

#include "cuda/stream.hpp"

namespace synk::cuda {

DeviceScope::DeviceScope(int device) {
  SYNK_CUDA_CHECK(cudaGetDevice(&prev_));
  if (device != prev_) {
    SYNK_CUDA_CHECK(cudaSetDevice(device));
    switched_ = true;
  }
}

DeviceScope::~DeviceScope() {
  // A failed restore (e.g. the previous device is in EXCLUSIVE_PROCESS mode
  // and taken) must not surface at some later cudaGetLastError() check.
  if (switched_ && cudaSetDevice(prev_) != cudaSuccess) (void)cudaGetLastError();
}

Stream::Stream() { SYNK_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }

Stream::~Stream() {
  if (s_) {
    (void)cudaStreamSynchronize(s_);
    (void)cudaStreamDestroy(s_);
    (void)cudaGetLastError();
  }
}

void Stream::synchronize() const { SYNK_CUDA_CHECK(cudaStreamSynchronize(s_)); }

}  // namespace synk::cuda

#endif  // SYNK_HAVE_CUDA
