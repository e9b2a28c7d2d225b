// src/cuda/context.cpp — the CUDA context record and a rank's device
// (cuda/context.hpp). Built in every build; the CUDA calls only with
// SYNK_HAVE_CUDA.
#include "cuda/context.hpp"

#include <atomic>

#include "synk/config.hpp"
#include "synk/error.hpp"

#if SYNK_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda/device.hpp"
#endif

namespace synk::detail {

namespace {
std::atomic<bool> g_cuda_context{false};
}  // namespace

void note_cuda_context() noexcept { g_cuda_context.store(true); }
bool cuda_context_noted() noexcept { return g_cuda_context.load(); }

int cuda_devices(std::string* why) {
#if SYNK_HAVE_CUDA
  // cudaGetDeviceCount initialises CUDA in the calling process, and a
  // forked child cannot use CUDA initialised in its parent: count in a child.
  const cuda::DeviceProbe p = cuda::probe_devices_in_child();
  if (why) *why = p.describe();
  return p.count;
#else
  if (why) *why = "synk was built without CUDA";
  return 0;
#endif
}

void use_rank_device(int rank, int device) {
#if SYNK_HAVE_CUDA
  // For good, before the rank's first CUDA object: every DeviceScope then
  // finds its device current and switches nothing, so no scope restores
  // device 0 on leaving (since CUDA 12 that makes a context on GPU 0 in
  // every rank, and fails under EXCLUSIVE_PROCESS compute mode).
  // Recorded first, failure or not: cudaSetDevice initialises CUDA in this
  // process (the master is rank 0), and a later fork() must then reuse the
  // fork server made before it, or refuse, instead of starting a new
  // server whose children cannot use CUDA.
  note_cuda_context();
  const cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw BackendError("rank " + std::to_string(rank) + ": CUDA call failed: cudaSetDevice(" + std::to_string(device) +
                       ") making the rank's device current: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                       ")");
  }
#else
  (void)rank;
  (void)device;
#endif
}

}  // namespace synk::detail
