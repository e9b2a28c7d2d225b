// tests/cuda_ranks_skip.hpp — why a test cannot fork CUDA ranks here (the
// reason its Gpu* test skips with), or "" when it can.
#pragma once

#include <string>

#include "cuda/context.hpp"  // cuda_context_noted, cuda_devices

namespace synk_test {

// `need` GPUs visible (one per rank for NCCL), and no CUDA context in this
// process yet (a forked rank cannot use its parent's CUDA, so run such tests
// as ctest does, one per process).
inline std::string no_cuda_ranks(int need = 1) {
  if (synk::detail::cuda_context_noted()) return "this process already used CUDA; run the test alone";
  const int gpus = synk::detail::cuda_devices();
  if (gpus == 0) return "no CUDA device";
  if (gpus < need)
    return "needs " + std::to_string(need) + " GPUs (one per rank), " + std::to_string(gpus) + " visible";
  return "";
}

}  // namespace synk_test
