// src/exec/cpu/rank.cpp — the CPU backend as a rank's Executor: a Session,
// variables and outputs in host memory.
#include <algorithm>
#include <cstring>
#include <vector>

#include "exec/session_executor.hpp"
#include "synk/session.hpp"

namespace synk::exec {

namespace {

// The rank's combiner on host memory (no stream).
RankSumFn host_rank_sum(const decltype(ExecutorOptions::rank_sum)& f) {
  if (!f) return {};
  return [f](const float* in, float* out, size_t n) { f(in, out, n, nullptr); };
}

class CpuExecutor final : public SessionExecutor<Session, Function> {
 public:
  CpuExecutor(const Graph& g, const ExecutorOptions& o)
      : SessionExecutor("CPU executor", g,
                        SessionOptions{.seed = o.seed, .blas_threads = o.blas_threads, .rank = o.rank,
                                       .rank_sum = host_rank_sum(o.rank_sum)}) {}

  void read_variable(int32_t id, void* dst, size_t nb) override {
    if (nb) std::memcpy(dst, s_.variable_data(id), nb);
  }
  void write_variable(int32_t id, const void* src, size_t nb) override {
    if (nb) std::memmove(s_.variable_data(id), src, nb);
  }
  void* scratch(Scratch use, size_t bytes) override {
    std::vector<float>& b = scratch_[static_cast<size_t>(use)];
    const size_t n = (bytes + sizeof(float) - 1) / sizeof(float);
    if (b.size() < n) b.resize(n);
    return b.data();
  }
  void copy_in(void* dst, const void* host_src, size_t nb) override {
    if (nb) std::memmove(dst, host_src, nb);
  }
  void copy_out(void* host_dst, const void* src, size_t nb) override {
    if (nb) std::memmove(host_dst, src, nb);
  }
  void scale_add(float* y, const float* x, size_t n, float w, bool add) override {
    if (add) for (size_t i = 0; i < n; ++i) y[i] += w * x[i];
    else for (size_t i = 0; i < n; ++i) y[i] = w * x[i];
  }
  void weighted_sum(float* y, const float* x, size_t n, std::span<const float> w) override {
    // Blocks of y stay in L1 while every chunk's block is added to them:
    // one pass over x, not one per chunk.
    constexpr size_t kBlock = 1024;
    alignas(64) float acc[kBlock];
    for (size_t b = 0; b < n; b += kBlock) {
      const size_t m = std::min(kBlock, n - b);
      for (size_t i = 0; i < m; ++i) acc[i] = 0.f;
      for (size_t c = 0; c < w.size(); ++c) {
        const float wc = w[c];
        const float* xc = x + c * n + b;
        for (size_t i = 0; i < m; ++i) acc[i] += wc * xc[i];
      }
      std::memcpy(y + b, acc, m * sizeof(float));
    }
  }
  void zero(void* p, size_t nb) override {
    if (nb) std::memset(p, 0, nb);
  }
  CUstream_st* stream() const override { return nullptr; }
  bool pin_host(const void*, size_t) override { return false; }
  void unpin_host(const void*) noexcept override {}

 private:
  // Floats, so that scratch for gradients is aligned for them.
  std::vector<float> scratch_[4];
};

}  // namespace

std::unique_ptr<Executor> make_cpu_executor(const Graph& g, const ExecutorOptions& opts) {
  return std::make_unique<CpuExecutor>(g, opts);
}

}  // namespace synk::exec
