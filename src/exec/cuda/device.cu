// exec/cuda/device.cu — implementation of the CUDA device layer
// (device.hpp): error reporting, device discovery and device memory.
//
// Compiled only when the CUDA toolkit is found (SYNK_HAVE_CUDA); it must
// also load and behave on machines without a GPU or driver, where
// device_count() is 0 and nothing else is called.
#include "exec/cuda/device.hpp"

#include <cuda_runtime.h>

#include <string>

namespace synk::cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    // No driver / no device / driver too old: not an error for the caller,
    // and the runtime's "last error" must not leak into a later check.
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

bool register_host(void* p, size_t bytes) noexcept {
  if (!p || bytes == 0) return false;
  if (cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return true;
}

void unregister_host(void* p) noexcept {
  if (p && cudaHostUnregister(p) != cudaSuccess) (void)cudaGetLastError();
}

int current_device() noexcept {
  int d = -1;
  if (cudaGetDevice(&d) != cudaSuccess) {
    (void)cudaGetLastError();
    return -1;
  }
  return d;
}

void throw_call_error(const char* lib, const char* call, const char* file, int line, const char* name,
                      const char* text) {
  const int dev = current_device();
  std::string msg = std::string(lib) + " call failed: " + call + " at " + file + ":" + std::to_string(line) +
                    " on device " + (dev >= 0 ? std::to_string(dev) : std::string("?")) + ": " + name + " (" +
                    text + ")";
  throw BackendError(msg);
}

void throw_error(int code, const char* call, const char* file, int line) {
  const auto err = static_cast<cudaError_t>(code);
  throw_call_error("CUDA", call, file, line, cudaGetErrorName(err), cudaGetErrorString(err));
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  SYNK_CUDA_CHECK(cudaGetDevice(&device_));
  if (bytes_ != 0) SYNK_CUDA_CHECK(cudaMalloc(&ptr_, bytes_));
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ == nullptr) return;
  // Free on the owning device, then restore the caller's current device.
  int prev = -1;
  const bool have_prev = cudaGetDevice(&prev) == cudaSuccess;
  if (have_prev && prev != device_) (void)cudaSetDevice(device_);
  (void)cudaFree(ptr_);
  if (have_prev && prev != device_) (void)cudaSetDevice(prev);
  (void)cudaGetLastError();
}

void DeviceBuffer::upload(const void* host) {
  if (bytes_ != 0) SYNK_CUDA_CHECK(cudaMemcpy(ptr_, host, bytes_, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* host) const {
  if (bytes_ != 0) SYNK_CUDA_CHECK(cudaMemcpy(host, ptr_, bytes_, cudaMemcpyDeviceToHost));
}

}  // namespace synk::cuda
