// src/exec/executor.cpp — make_executor: the one place that picks a rank's
// backend (see executor.hpp).
#include "exec/executor.hpp"

namespace synk::exec {

std::unique_ptr<Executor> make_cpu_executor(const Graph& g, const ExecutorOptions& opts);   // exec/cpu/rank.cpp
std::unique_ptr<Executor> make_cuda_executor(const Graph& g, const ExecutorOptions& opts);  // exec/cuda/rank.cpp

std::unique_ptr<Executor> make_executor(const Graph& g, const ExecutorOptions& opts) {
  switch (opts.device) {
    case Device::cpu: return make_cpu_executor(g, opts);
    case Device::cuda: return make_cuda_executor(g, opts);
  }
  throw ArgumentError("make_executor: device " + std::to_string(static_cast<int>(opts.device)) + " is not a backend");
}

}  // namespace synk::exec
