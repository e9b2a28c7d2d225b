// bench/common/gpu_info.hpp — the GPU a benchmark ran on, for its header
// line and JSON: name, memory, compute capability, driver and CUDA runtime
// versions. Benchmarks report them so figures can be compared across
// machines (issue 4: results name the GPU, driver and CUDA version).
//
// Header-only; include only where SYNK_HAVE_CUDA is 1 and the target links
// CUDA::cudart. Initialises CUDA in the calling process: in a program that
// forks GPU workers, call it after fork(). It records that with synk first,
// so a synk::fork() after it reuses the fork server made before it, or
// refuses CUDA ranks saying why, instead of forking workers that cannot use
// CUDA.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "synk/error.hpp"

namespace synk::detail {
void note_cuda_context() noexcept;  // libsynk (src/cuda/context.cpp)
}  // namespace synk::detail

namespace bench {

struct GpuInfo {
  int device = 0;
  std::string name;
  size_t memory_bytes = 0;
  int cc_major = 0, cc_minor = 0;
  int driver_version = 0;   // e.g. 12080 (cudaDriverGetVersion)
  int runtime_version = 0;  // e.g. 13000 (cudaRuntimeGetVersion)
};

// 12080 -> "12.8"
inline std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

inline GpuInfo gpu_info(int device) {
  synk::detail::note_cuda_context();  // before the first CUDA call below, failed or not
  GpuInfo g;
  g.device = device;
  cudaDeviceProp p{};
  const cudaError_t e = cudaGetDeviceProperties(&p, device);
  if (e != cudaSuccess)
    throw synk::BackendError("cudaGetDeviceProperties(device " + std::to_string(device) +
                             ") failed: " + cudaGetErrorString(e));
  g.name = p.name;
  g.memory_bytes = p.totalGlobalMem;
  g.cc_major = p.major;
  g.cc_minor = p.minor;
  (void)cudaDriverGetVersion(&g.driver_version);
  (void)cudaRuntimeGetVersion(&g.runtime_version);
  return g;
}

// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB), driver CUDA 12.8, runtime 13.0"
inline std::string describe(const GpuInfo& g) {
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", static_cast<double>(g.memory_bytes) / (1024.0 * 1024.0 * 1024.0));
  return g.name + " (sm_" + std::to_string(g.cc_major) + std::to_string(g.cc_minor) + ", " + mem +
         "), driver CUDA " + cuda_version_string(g.driver_version) + ", runtime " +
         cuda_version_string(g.runtime_version);
}

inline nlohmann::json to_json(const GpuInfo& g) {
  return {{"device", g.device},
          {"name", g.name},
          {"memory_bytes", g.memory_bytes},
          {"compute_capability", std::to_string(g.cc_major) + "." + std::to_string(g.cc_minor)},
          {"driver_version", cuda_version_string(g.driver_version)},
          {"cuda_runtime_version", cuda_version_string(g.runtime_version)}};
}

}  // namespace bench
