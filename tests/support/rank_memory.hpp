// tests/support/rank_memory.hpp — the rank-memory calls the runtime makes on
// any executor (scratch, copies, weighted adds, zero), checked against the
// same arithmetic on the host: run on the CPU executor (test_executor.cpp)
// and on the CUDA one (test_cuda_exec.cpp, GpuRankMemory), so every backend
// is held to the CPU's results bit for bit.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "exec/executor.hpp"

namespace synk_test {

inline void check_rank_memory(synk::exec::Executor& ex) {
  using Scratch = synk::exec::Executor::Scratch;
  const size_t n = 1000;
  std::vector<float> x(n), y(n);
  for (size_t i = 0; i < n; ++i) {
    x[i] = std::sin(0.37f * static_cast<float>(i));
    y[i] = std::cos(0.11f * static_cast<float>(i));
  }
  auto* dx = static_cast<float*>(ex.scratch(Scratch::slice, n * sizeof(float)));
  auto* dy = static_cast<float*>(ex.scratch(Scratch::grads, n * sizeof(float)));
  ASSERT_NE(dx, dy) << "two uses share one scratch";
  ex.copy_in(dx, x.data(), n * sizeof(float));
  ex.copy_in(dy, y.data(), n * sizeof(float));
  const float w = 0.3f;
  ex.scale_add(dy, dx, n, w, true);     // y += w x
  ex.scale_add(dx, dx, n, 2.f, false);  // x = 2 x, in place
  std::vector<float> got_y(n), got_x(n);
  ex.copy_out(got_y.data(), dy, n * sizeof(float));
  ex.copy_out(got_x.data(), dx, n * sizeof(float));
  for (size_t i = 0; i < n; ++i) {
    const volatile float wx = w * x[i];  // the rounded product, then the add
    EXPECT_EQ(got_y[i], y[i] + wx) << "y += w x at " << i;
    EXPECT_EQ(got_x[i], 2.f * x[i]) << "x = 2 x at " << i;
  }
  ex.zero(dy, n * sizeof(float));
  ex.copy_out(got_y.data(), dy, n * sizeof(float));
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(got_y[i], 0.f) << "zero at " << i;
  // Chunks summed in order with weights: the same roundings as adding the
  // weighted chunks one by one from +0.
  {
    const size_t k = 3;
    std::vector<float> xs(k * n), w = {0.25f, 0.6f, 0.15f};
    for (size_t i = 0; i < xs.size(); ++i) xs[i] = std::sin(0.013f * static_cast<float>(i * i % 977));
    auto* dxs = static_cast<float*>(ex.scratch(Scratch::chunks, k * n * sizeof(float)));
    ex.copy_in(dxs, xs.data(), k * n * sizeof(float));
    ex.weighted_sum(dy, dxs, n, w);
    ex.copy_out(got_y.data(), dy, n * sizeof(float));
    for (size_t i = 0; i < n; ++i) {
      float acc = 0.f;
      for (size_t c = 0; c < k; ++c) {
        const volatile float p = w[c] * xs[c * n + i];
        acc = acc + p;
      }
      EXPECT_EQ(got_y[i], acc) << "weighted sum at " << i;
    }
  }
  // A larger request of one use leaves the others' contents alone.
  auto* big = ex.scratch(Scratch::staging, 4 * n * sizeof(float));
  ex.zero(big, 4 * n * sizeof(float));
  ex.copy_out(got_x.data(), ex.scratch(Scratch::slice, n * sizeof(float)), n * sizeof(float));
  for (size_t i = 0; i < n; ++i) EXPECT_EQ(got_x[i], 2.f * x[i]) << "slice scratch kept at " << i;
}

}  // namespace synk_test
