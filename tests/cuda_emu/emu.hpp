// tests/cuda_emu/emu.hpp — the inside of the CUDA emulation for tests: what
// its parts (runtime.cpp, cublas.cpp, nccl.cpp, launch.cpp) share. synk's
// own sources never include it; .cu files reach the launch path through
// kernel_emu.hpp.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <stdexcept>
#include <string>

namespace synk_emu {

// Work queued on `stream` (0: the current device's default stream) in
// stream order, as CUDA runs a kernel, copy or memset: run later by the
// stream's worker thread, or recorded into the graph while the stream
// captures. `what` names it in errors. Returns what the CUDA call returns
// (e.g. cudaErrorInvalidResourceHandle for a destroyed stream) and sets the
// calling thread's last error as CUDA would. Recorded work runs once per
// graph launch, so it must copy what it needs. Work that throws fails its
// device as a kernel fault does: the message goes to stderr and the
// device's later synchronisations and launches return cudaErrorLaunchFailure.
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work, const char* what);

// The device the calling host thread has current (cudaSetDevice), and the
// device a stream belongs to.
int current_device();
int stream_device(cudaStream_t stream);

// Whether `p` points into an allocation of the emulated device memory
// (cudaMalloc) or registered host memory; `bytes` from there on must lie
// inside it. Kernel, copy and collective paths check their pointers with it.
bool device_accessible(const void* p, size_t bytes);

// Thrown by queued work that fails as a faulting kernel fails on a GPU (a
// barrier error, an illegal address), after it wrote its message to
// stderr: the stream's worker then makes `error` sticky, so the next
// synchronisation and every later call return it, as on a GPU.
struct Fault : std::runtime_error {
  cudaError_t error;
  Fault(cudaError_t e, const std::string& what) : std::runtime_error(what), error(e) {}
};

// Sets the calling thread's last error (cudaGetLastError), as a failing CUDA
// call does: the latest error replaces an earlier one (CUDA's "last").
void set_last_error(cudaError_t e);

}  // namespace synk_emu
