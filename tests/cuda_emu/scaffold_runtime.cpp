// SCAFFOLD: replaced by runtime.cpp at merge
// tests/cuda_emu/scaffold_runtime.cpp — the least of a CUDA runtime that the
// kernel launcher (launch.cpp) and its tests need until the emulated runtime
// (runtime.cpp) exists: one device, memory in an allocation table, streams
// as names only, and work run at once on the calling thread (so two host
// threads launching at once are two OS threads running grids at once). A
// Fault from work becomes the sticky error. CMakeLists.txt leaves this file
// out once runtime.cpp exists.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "emu.hpp"

namespace {

std::mutex mu;
std::map<const char*, size_t> allocations;  // base -> bytes
cudaError_t sticky = cudaSuccess;
thread_local cudaError_t last = cudaSuccess;

cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) synk_emu::set_last_error(e);
  return e;
}

cudaError_t sticky_error() {
  std::lock_guard<std::mutex> lock(mu);
  return sticky;
}

}  // namespace

namespace synk_emu {

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work, const char* what) {
  if (cudaError_t e = sticky_error()) return ret(e);
  try {
    work();
  } catch (const Fault& f) {
    std::lock_guard<std::mutex> lock(mu);
    if (sticky == cudaSuccess) sticky = f.error;
  }
  return cudaSuccess;
}

int current_device() { return 0; }
int stream_device(cudaStream_t) { return 0; }

bool device_accessible(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu);
  const char* c = static_cast<const char*>(p);
  auto it = allocations.upper_bound(c);
  if (it == allocations.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second;
}

void set_last_error(cudaError_t e) {
  if (last == cudaSuccess) last = e;
}

}  // namespace synk_emu

extern "C" {

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return ret(d == 0 ? cudaSuccess : cudaErrorInvalidDevice); }

cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (cudaError_t e = sticky_error()) return ret(e);
  *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  std::memset(*p, 0xff, bytes);  // NaN: nothing reads a fresh allocation as zeros
  std::lock_guard<std::mutex> lock(mu);
  allocations[static_cast<const char*>(*p)] = bytes;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::mutex> lock(mu);
  if (!allocations.erase(static_cast<const char*>(p))) return ret(cudaErrorInvalidValue);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (cudaError_t e = sticky_error()) return ret(e);
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, k);
}
cudaError_t cudaMemset(void* p, int v, size_t bytes) {
  if (cudaError_t e = sticky_error()) return ret(e);
  std::memset(p, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) { return cudaMemset(p, v, bytes); }

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  static char names[1024];
  static int next = 0;
  std::lock_guard<std::mutex> lock(mu);
  *s = reinterpret_cast<cudaStream_t>(&names[next++ % 1024]);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return ret(sticky_error()); }
cudaError_t cudaDeviceSynchronize() { return ret(sticky_error()); }

cudaError_t cudaGetLastError() {
  const cudaError_t e = last != cudaSuccess ? last : sticky_error();
  last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last != cudaSuccess ? last : sticky_error(); }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    default: return "cudaError(scaffold)";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

}  // extern "C"
