// src/exec/cpu/rank.cpp — the CPU backend as a rank's Executor: a Session,
// variables and outputs in host memory.
#include <cstring>

#include "exec/session_executor.hpp"
#include "synk/session.hpp"

namespace synk::exec {

namespace {

class CpuExecutor final : public SessionExecutor<Session, Function> {
 public:
  CpuExecutor(const Graph& g, const ExecutorOptions& o)
      : SessionExecutor("CPU executor", g,
                        SessionOptions{.seed = o.seed, .blas_threads = o.blas_threads, .rank = o.rank}) {}

  void read_variable(int32_t id, void* dst, size_t nb) override {
    if (nb) std::memcpy(dst, s_.variable_data(id), nb);
  }
  void write_variable(int32_t id, const void* src, size_t nb) override {
    if (nb) std::memmove(s_.variable_data(id), src, nb);
  }
  bool on_device() const override { return false; }
  CUstream_st* stream() const override { return nullptr; }
  bool pin_host(const void*, size_t) override { return false; }
  void unpin_host(const void*) noexcept override {}
  float* scratch_floats(size_t n) override {
    if (scratch_.size() < n) scratch_.resize(n);
    return scratch_.data();
  }

 private:
  std::vector<float> scratch_;
};

}  // namespace

std::unique_ptr<Executor> make_cpu_executor(const Graph& g, const ExecutorOptions& opts) {
  return std::make_unique<CpuExecutor>(g, opts);
}

}  // namespace synk::exec
