// src/cuda/device.cu — cuda/device.hpp: error reporting, device
// discovery, host registration and device memory.
//
// Compiled only when the CUDA toolkit is found (SYNK_HAVE_CUDA); it must
// also load and behave on machines without a GPU or driver, where
// device_count() is 0 and nothing else is called. The probes that run in a
// forked child keep the calling process free of CUDA, so that it can still
// fork CUDA ranks afterwards.
#include "cuda/device.hpp"

#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "cuda/context.hpp"

namespace synk::cuda {

namespace {

// cudaGetDeviceCount in this process, recorded; the error is cleared so it
// cannot surface at a later, unrelated cudaGetLastError().
int count_here(cudaError_t& err) noexcept {
  detail::note_cuda_context();
  int n = 0;
  err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

// What a probe child sends back through its pipe.
struct ProbeReply {
  int32_t count;
  int32_t error;
  char name[64];
  char text[192];
};

void copy_text(char* dst, size_t cap, const char* src) {
  std::snprintf(dst, cap, "%s", src ? src : "");
}

DeviceProbe probe_failed(const std::string& why) {
  DeviceProbe p;
  p.error = -1;
  p.name = "probe";
  p.text = why;
  return p;
}

}  // namespace

std::string DeviceProbe::describe() const {
  if (error == 0)
    return count > 0 ? std::to_string(count) + " CUDA device(s) visible" : std::string("no CUDA device is visible");
  if (error < 0) return "the CUDA device probe failed: " + text;
  const std::string what = name + ": " + text;
  switch (static_cast<cudaError_t>(error)) {
    case cudaErrorNoDevice: return "no CUDA device is visible (" + what + ")";
    case cudaErrorInsufficientDriver:
      return "no CUDA device is visible (" + what + "; no CUDA driver, or one older than the runtime)";
    case cudaErrorInitializationError:
      return "CUDA initialisation failed: " + name + " (" + text +
             "; a process forked after its parent initialised CUDA gets this)";
    default: return "CUDA initialisation failed: " + name + " (" + text + ")";
  }
}

DeviceProbe probe_devices() {
  DeviceProbe p;
  cudaError_t err = cudaSuccess;
  p.count = count_here(err);
  p.error = static_cast<int>(err);
  if (err != cudaSuccess) {
    p.name = cudaGetErrorName(err);
    p.text = cudaGetErrorString(err);
  }
  return p;
}

DeviceProbe probe_devices_in_child() {
  // A child of a process with initialised CUDA cannot initialise it again.
  if (detail::cuda_context_noted()) return probe_devices();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return probe_failed(std::string("pipe2: ") + std::strerror(errno));
  std::fflush(nullptr);  // buffered output would be written twice
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return probe_failed(std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    ::close(fds[0]);
    ProbeReply r{};
    cudaError_t err = cudaSuccess;
    r.count = count_here(err);
    r.error = static_cast<int32_t>(err);
    if (err != cudaSuccess) {
      copy_text(r.name, sizeof r.name, cudaGetErrorName(err));
      copy_text(r.text, sizeof r.text, cudaGetErrorString(err));
    }
    const char* p = reinterpret_cast<const char*>(&r);
    size_t left = sizeof r;
    while (left > 0) {
      const ssize_t w = ::write(fds[1], p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      p += w;
      left -= static_cast<size_t>(w);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  ProbeReply r{};
  char* p = reinterpret_cast<char*>(&r);
  size_t got = 0;
  while (got < sizeof r) {
    const ssize_t n = ::read(fds[0], p + got, sizeof r - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (got != sizeof r) {
    const std::string how = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                                : "exited with status " + std::to_string(WEXITSTATUS(status));
    return probe_failed("the probe child " + how + " before it answered");
  }
  r.name[sizeof r.name - 1] = '\0';
  r.text[sizeof r.text - 1] = '\0';
  DeviceProbe out;
  out.count = r.error == 0 ? r.count : 0;
  out.error = r.error;
  out.name = r.name;
  out.text = r.text;
  return out;
}

int device_count() noexcept {
  cudaError_t err = cudaSuccess;
  return count_here(err);
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
  detail::note_cuda_context();
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
  if (bytes_ == 0) return;
  SYNK_CUDA_CHECK(cudaMemcpy(ptr_, host, bytes_, cudaMemcpyHostToDevice));
  // From pageable memory cudaMemcpy may return once the source is staged,
  // before the data lands; work on a non-blocking stream (which does not
  // wait for the legacy stream) could then read the old contents. The
  // buffer is whole when upload() returns.
  SYNK_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
}

void DeviceBuffer::download(void* host) const {
  if (bytes_ != 0) SYNK_CUDA_CHECK(cudaMemcpy(host, ptr_, bytes_, cudaMemcpyDeviceToHost));
}

}  // namespace synk::cuda
