// SCAFFOLD: replaced by runtime.cpp at merge
// tests/cuda_emu/scaffold_runtime.cpp — a throwaway stand-in for the
// emulated CUDA runtime, only so that nccl.cpp's self-tests build and run
// before runtime.cpp exists: emu.hpp's functions and the few cuda* calls
// test_emu_nccl.cpp makes. Work queued on a stream runs at once on the
// calling thread (synchronously). Delete this file when runtime.cpp lands.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>

#include "emu.hpp"

namespace {
std::mutex g_mu;
std::map<const char*, size_t> g_allocs;  // base -> bytes
thread_local int t_device = 0;
thread_local cudaError_t t_last = cudaSuccess;
}  // namespace

namespace synk_emu {

cudaError_t enqueue(cudaStream_t, std::function<void()> work, const char*) {
  work();
  return cudaSuccess;
}
int current_device() { return t_device; }
int stream_device(cudaStream_t) { return t_device; }
bool device_accessible(const void* p, size_t bytes) {
  std::lock_guard lk(g_mu);
  const char* c = static_cast<const char*>(p);
  auto it = g_allocs.upper_bound(c);
  if (it == g_allocs.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second;
}
void set_last_error(cudaError_t e) {
  if (t_last == cudaSuccess) t_last = e;
}

}  // namespace synk_emu

extern "C" {

cudaError_t cudaSetDevice(int device) {
  t_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = t_device;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  std::lock_guard lk(g_mu);
  g_allocs[static_cast<const char*>(*p)] = bytes;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard lk(g_mu);
    g_allocs.erase(static_cast<const char*>(p));
  }
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) {
  std::memset(p, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(new char);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<char*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}

}  // extern "C"
