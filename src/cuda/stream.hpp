// src/cuda/stream.hpp — RAII owners of a CUDA stream and of the current
// device for a scope.
//
// Private header; includes the CUDA runtime header, so only files built with
// SYNK_HAVE_CUDA include it. Constructors throw BackendError naming the
// failed call; destructors never throw.
#pragma once

#include <cuda_runtime.h>

#include "cuda/device.hpp"

namespace synk::cuda {

// Makes `device` current for the scope, restoring the previous one (a
// failed restore is cleared, never reported later). Since CUDA 12
// cudaSetDevice makes the device's primary context at once, so restoring a
// device this thread never used costs a context there: a process that
// works on one GPU (a runtime rank) makes it current before its first CUDA
// object (detail::use_rank_device, cuda/context.hpp), and its scopes then
// switch nothing.
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int prev_ = -1;
  bool switched_ = false;
};

// A non-blocking stream on the current device (it does not synchronise
// with the legacy default stream, and can be captured into a CUDA graph).
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void synchronize() const;

 private:
  cudaStream_t s_ = nullptr;
};

}  // namespace synk::cuda
