// src/exec/cpu/rank.cpp — the CPU backend as a rank's Executor: a Session,
// variables and outputs in host memory.
#include <cstring>

#include "exec/executor.hpp"
#include "synk/error.hpp"
#include "synk/session.hpp"

namespace synk::exec {

namespace {

class CpuExecutor final : public Executor {
 public:
  CpuExecutor(const Graph& g, const ExecutorOptions& o)
      : s_(g, SessionOptions{.seed = o.seed, .blas_threads = o.blas_threads, .rank = o.rank}) {}

  int add(const FunctionDef& def) override {
    fns_.push_back(s_.function(def));
    return static_cast<int>(fns_.size() - 1);
  }
  std::vector<Array> call(int fn, const std::vector<ArrayView>& inputs) override { return at(fn)(inputs); }
  void call_into(int fn, const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs) override {
    at(fn).call_into(inputs, outputs);
  }
  void* variable_storage(int32_t id) override { return s_.variable_data(id); }
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
  Function& at(int fn) {
    if (fn < 0 || static_cast<size_t>(fn) >= fns_.size())
      throw ArgumentError("CPU executor: function index " + std::to_string(fn) + " of " + std::to_string(fns_.size()));
    return fns_[static_cast<size_t>(fn)];
  }
  Session s_;
  std::vector<Function> fns_;
  std::vector<float> scratch_;
};

}  // namespace

std::unique_ptr<Executor> make_cpu_executor(const Graph& g, const ExecutorOptions& opts) {
  return std::make_unique<CpuExecutor>(g, opts);
}

}  // namespace synk::exec
