// src/cuda/device.hpp — the base of the CUDA device layer (src/cuda) every
// GPU part builds on: error checking, device discovery, host registration
// and move-only device memory.
//
// This header includes no CUDA header on purpose, so plain C++ code (the
// session, the runtime, the tests) can use it when compiled by the host
// compiler. It exists only where SYNK_HAVE_CUDA is 1; callers guard with
// `#if SYNK_HAVE_CUDA` (synk/config.hpp).
//
//   if (synk::cuda::device_count() > 0) {
//     synk::cuda::DeviceBuffer x(1024 * sizeof(float));  // on the current device
//     x.upload(host);                                     // exactly x.bytes()
//     SYNK_CUDA_CHECK(cudaDeviceSynchronize());          // throws BackendError
//   }
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <utility>

#include "synk/error.hpp"

namespace synk::cuda {

// What the CUDA runtime answered when asked for its devices
// (cudaGetDeviceCount), so that a failure is reported as what it was and
// never as "zero devices".
struct DeviceProbe {
  int count = 0;     // usable devices; 0 whenever error != 0
  int error = 0;     // cudaError_t of cudaGetDeviceCount (0: success); -1: the probe child failed
  std::string name;  // e.g. "cudaErrorNoDevice"; empty on success
  std::string text;  // the runtime's description of the error
  // One line for messages: "2 CUDA device(s) visible", "no CUDA device is
  // visible" (with the error where cudaErrorNoDevice or
  // cudaErrorInsufficientDriver said so), "CUDA initialisation failed:
  // <name> (<text>)" for any other error, or "the CUDA device probe
  // failed: <text>".
  std::string describe() const;
};

// Every query below that runs in this process initialises CUDA here, and
// records that (synk::detail::note_cuda_context, cuda/context.hpp): a child
// forked from a process with initialised CUDA cannot use CUDA, so
// synk::fork() then refuses CUDA ranks with a message saying why, instead
// of forking ranks whose first CUDA call fails.

// Asks in this process. Throws nothing but std::bad_alloc.
DeviceProbe probe_devices();
// Asks in a short-lived forked child, so this process stays free of CUDA
// (what CudaSession::available() and synk::fork() use). In a process that
// has already initialised CUDA a child cannot ask, so it asks here.
DeviceProbe probe_devices_in_child();

// Number of usable CUDA devices, asked in this process; 0 when there is no
// driver, no GPU, the driver is older than the runtime or initialisation
// failed (probe_devices() says which). Never throws.
int device_count() noexcept;

// The device current for this thread, or -1 if none can be queried.
int current_device() noexcept;

// Page-locks [p, p + bytes) of host memory (cudaHostRegister) so that
// copies from it go by DMA and run asynchronously. Returns false where that
// is refused (the memory then stays pageable: slower, still correct).
// unregister_host undoes it; both never throw.
bool register_host(void* p, size_t bytes) noexcept;
void unregister_host(void* p) noexcept;

// Throws BackendError for a failed CUDA runtime call: the message names the
// call text, file:line, the device and the CUDA error name and text.
[[noreturn]] void throw_error(int code, const char* call, const char* file, int line);
// The common form of every failed library call (CUDA, cuBLAS, ...):
// "<lib> call failed: <call> at <file>:<line> on device <d>: <name> (<text>)".
[[noreturn]] void throw_call_error(const char* lib, const char* call, const char* file, int line,
                                   const char* name, const char* text);

// Runs a CUDA runtime call and throws synk::BackendError if it failed.
#define SYNK_CUDA_CHECK(call)                                                  \
  do {                                                                         \
    const int synk_cuda_status_ = static_cast<int>(call);                      \
    if (synk_cuda_status_ != 0)                                                \
      ::synk::cuda::throw_error(synk_cuda_status_, #call, __FILE__, __LINE__); \
  } while (0)

// Raw device memory, owned; move-only. Allocated on the device current at
// construction and freed on that device.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();  // never throws: a failed free is ignored
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { swap(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    DeviceBuffer(std::move(o)).swap(*this);
    return *this;
  }

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }

  // Synchronous copies of exactly bytes() bytes.
  void upload(const void* host);
  void download(void* host) const;

  void swap(DeviceBuffer& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    std::swap(device_, o.device_);
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  int device_ = -1;
};

}  // namespace synk::cuda
