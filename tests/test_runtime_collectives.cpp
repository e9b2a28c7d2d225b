// Tests of synk::Runtime's collectives on shared variables (every
// reduction, reduce, broadcast, gather, all_gather, scatter; integer data,
// exact equality; sizes 0, 1 and odd over 1-4 ranks), get/set per rank, and
// map / map_reduce.
#include <algorithm>
#include <numeric>

#include <gtest/gtest.h>

#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using namespace synk_test;

TEST(RuntimeCollectives, ExactOnIntegers) {
  for (int n : {1, 2, 3, 4}) {
    for (int64_t size : {0, 1, 7, 13}) {
      Graph g;
      Tensor v = g.variable("v", {size}, Init::zeros(), i32);
      Tensor x = g.input("x", f32, {batch});
      Runtime rt = synk::fork(opts(n));
      rt.function({"f", {x}, {{synk::sum(x), Collect::sum}}});
      rt.distribute();
      auto reset = [&] {
        for (int r = 0; r < n; ++r) rt.set("v", ints(size, r + 1), r);
      };
      auto expect = [&](int r, const std::vector<int32_t>& want, const char* what) {
        EXPECT_EQ(rt.get(v, r).to_vector<int32_t>(), want) << what << " n=" << n << " size=" << size << " rank " << r;
      };
      auto combine = [&](auto op) { return fold_ints(n, size, op); };
      const auto sum = combine([](int32_t a, int32_t b) { return a + b; });
      const auto mx = combine([](int32_t a, int32_t b) { return std::max(a, b); });
      const auto mn = combine([](int32_t a, int32_t b) { return std::min(a, b); });
      const auto pr = combine([](int32_t a, int32_t b) { return a * b; });
      std::vector<int32_t> avg = sum;
      for (auto& a : avg) a /= n;

      reset();
      rt.all_reduce({"v"}, ReduceOp::sum);
      for (int r = 0; r < n; ++r) expect(r, sum, "all_reduce sum");
      reset();
      rt.all_reduce({v}, ReduceOp::max);
      for (int r = 0; r < n; ++r) expect(r, mx, "all_reduce max");
      reset();
      rt.all_reduce({v}, ReduceOp::min);
      for (int r = 0; r < n; ++r) expect(r, mn, "all_reduce min");
      reset();
      rt.all_reduce({v}, ReduceOp::prod);
      for (int r = 0; r < n; ++r) expect(r, pr, "all_reduce prod");
      reset();
      rt.all_reduce({v}, ReduceOp::avg);
      for (int r = 0; r < n; ++r) expect(r, avg, "all_reduce avg");
      reset();
      rt.reduce({"v"}, ReduceOp::sum, n - 1);
      expect(n - 1, sum, "reduce root");
      if (n > 1) expect(0, ints(size, 1).to_vector<int32_t>(), "reduce non-root unchanged");
      reset();
      rt.broadcast({"v"}, n - 1);
      for (int r = 0; r < n; ++r) expect(r, ints(size, n).to_vector<int32_t>(), "broadcast");
      reset();
      std::vector<int32_t> stacked;
      for (int r = 0; r < n; ++r) {
        auto x = ints(size, r + 1).to_vector<int32_t>();
        stacked.insert(stacked.end(), x.begin(), x.end());
      }
      Array ga = rt.gather("v");
      EXPECT_EQ(ga.shape(), (Shape{n, size}));
      EXPECT_EQ(ga.to_vector<int32_t>(), stacked);
      EXPECT_EQ(rt.all_gather(v).to_vector<int32_t>(), stacked);
      std::vector<int32_t> sc(stacked.rbegin(), stacked.rend());
      rt.scatter("v", Array::from(sc, {n, size}));
      for (int r = 0; r < n; ++r)
        expect(r, std::vector<int32_t>(sc.begin() + r * size, sc.begin() + (r + 1) * size), "scatter");
      rt.set("v", ints(size, 42));
      for (int r = 0; r < n; ++r) expect(r, ints(size, 42).to_vector<int32_t>(), "set all");
    }
  }
}

int64_t square_job(const int32_t& x) {
  if (x < 0) throw ArgumentError("negative job");
  return static_cast<int64_t>(x) * x;
}

TEST(RuntimeMap, JobsInOrderWithReduce) {
  for (int n : {1, 3}) {
    Runtime rt = synk::fork(opts(n));
    std::vector<int32_t> jobs(100);
    std::iota(jobs.begin(), jobs.end(), 0);
    std::vector<int64_t> out = rt.map(&square_job, jobs);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(out[static_cast<size_t>(i)], int64_t{i} * i);
    int64_t total = rt.map_reduce(&square_job, jobs, int64_t{0}, [](int64_t a, int64_t b) { return a + b; });
    EXPECT_EQ(total, 328350);
  }
}

}  // namespace
