// synk-bmm — the batched products of self-attention on synk's CPU executor
// (Op::BatchMatMul: one sgemm per product), against the same products as
// one cblas_sgemm call each from a plain C++ loop (the executor's floor)
// and as plain loops with no BLAS (what a hand-written kernel would do).
//
//   synk-bmm                                  # N=128, H=4, T=17, d=32 (the ViT of issue 28)
//   synk-bmm --n 64 --tokens 65 --json b.json
//
// Products: scores q k^T ([N,H,T,d] x [N,H,T,d]^T -> [N,H,T,T]) and
// weighted values s v ([N,H,T,T] x [N,H,T,d] -> [N,H,T,d]); and the
// backward of both (dq, dk from the scores, ds, dv from s v: four batched
// products in one synk call, the floor four sgemm loops). One BLAS thread,
// as synk's CPU executor runs it. Each line: the median of --reps timed
// calls in ms, GFLOP/s for synk, and #wrong = synk's outputs off the
// plain-loop reference (|diff| > 1e-4 + 1e-4 |ref|).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include <cblas.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <synk/synk.hpp>

#include "common/bench_main.hpp"

namespace {

using clk = std::chrono::steady_clock;

double median_ms(const std::function<void()>& f, int reps) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clk::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(clk::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// C[b] = op(A[b]) op(B[b]) for `count` row-major products, plain loops
// (the p loop innermost over contiguous memory where the layout allows).
void loop_bmm(int count, bool tb, int m, int n, int k, const float* a, const float* b, float* c) {
  for (int i = 0; i < count; ++i) {
    const float* A = a + static_cast<size_t>(i) * m * k;
    const float* B = b + static_cast<size_t>(i) * k * n;
    float* C = c + static_cast<size_t>(i) * m * n;
    for (int r = 0; r < m; ++r) {
      if (tb) {
        for (int j = 0; j < n; ++j) {
          float s = 0.f;
          for (int p = 0; p < k; ++p) s += A[r * k + p] * B[j * k + p];
          C[r * n + j] = s;
        }
      } else {
        for (int j = 0; j < n; ++j) C[r * n + j] = 0.f;
        for (int p = 0; p < k; ++p) {
          const float x = A[r * k + p];
          for (int j = 0; j < n; ++j) C[r * n + j] += x * B[p * n + j];
        }
      }
    }
  }
}

void sgemm_bmm(int count, bool ta, bool tb, int m, int n, int k, const float* a, const float* b, float* c) {
  for (int i = 0; i < count; ++i)
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.f,
                a + static_cast<size_t>(i) * m * k, ta ? m : k, b + static_cast<size_t>(i) * k * n, tb ? k : n, 0.f,
                c + static_cast<size_t>(i) * m * n, n);
}

int64_t wrong(const std::vector<float>& ref, const std::vector<float>& got) {
  int64_t w = 0;
  for (size_t i = 0; i < ref.size(); ++i) w += std::fabs(got[i] - ref[i]) > 1e-4f + 1e-4f * std::fabs(ref[i]);
  return w;
}

int run(int argc, char** argv) {
  int n = 128, heads = 4, tokens = 17, dim = 32, reps = 50;
  std::string json_path;
  CLI::App app{"synk-bmm: attention's batched products on the CPU executor against sgemm loops and plain loops"};
  app.add_option("--n", n, "batch rows N")->check(bench::integer(1, 1 << 16));
  app.add_option("--heads", heads, "heads H")->check(bench::integer(1, 1024));
  app.add_option("--tokens", tokens, "tokens T")->check(bench::integer(1, 4096));
  app.add_option("--dim", dim, "head width d")->check(bench::integer(1, 4096));
  app.add_option("--reps", reps, "timed calls (the median is reported)")->check(bench::integer(1, 100000));
  app.add_option("--json", json_path, "write the results as JSON to this file")->check(bench::writable_file());
  if (!bench::parse(app, argc, argv)) return 0;
  openblas_set_num_threads(1);

  const int B = n * heads, T = tokens, d = dim;
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  auto rnd = [&](size_t count) {
    std::vector<float> v(count);
    for (float& x : v) x = U(gen);
    return v;
  };
  const size_t qkv = static_cast<size_t>(B) * T * d, tt = static_cast<size_t>(B) * T * T;
  std::vector<float> q = rnd(qkv), k = rnd(qkv), v = rnd(qkv), s = rnd(tt);

  using namespace synk;
  Graph g;
  const Shape sq{batch, heads, T, d}, ss{batch, heads, T, T};
  Tensor Q = g.input("q", f32, sq), K = g.input("k", f32, sq), V = g.input("v", f32, sq), S = g.input("s", f32, ss);
  Tensor scores = matmul(Q, K, false, true);
  Tensor values = matmul(S, V);
  // Backward of both products for an upstream gradient of ones: dq = 1 k,
  // dk = 1^T q, ds = 1 v^T, dv = s^T 1 (four batched products).
  std::vector<Tensor> back = grad(sum(scores) + sum(values), {Q, K, S, V});
  Session ses(g);
  auto f_scores = ses.function({.name = "scores", .inputs = {Q, K}, .outputs = {{scores}}});
  auto f_values = ses.function({.name = "values", .inputs = {S, V}, .outputs = {{values}}});
  std::vector<OutputSpec> bouts(back.begin(), back.end());
  auto f_back = ses.function({.name = "backward", .inputs = {Q, K, S, V}, .outputs = bouts});
  const Array qa = Array::from(q, {n, heads, T, d}), ka = Array::from(k, {n, heads, T, d});
  const Array va = Array::from(v, {n, heads, T, d}), sa = Array::from(s, {n, heads, T, T});
  std::vector<float> out_s(tt), out_v(qkv), ref_s(tt), ref_v(qkv), tmp_s(tt), tmp_v(qkv);
  std::vector<float> dq(qkv), dk(qkv), ds(tt), dv(qkv);

  struct Line {
    const char* name;
    double flop, synk_ms, sgemm_ms, loop_ms;
    int64_t wrong;
  };
  std::vector<Line> lines;
  const double f_prod = 2.0 * B * T * T * d;
  {
    auto call = [&] { f_scores.call_into({qa, ka}, {out_s.data()}); };
    loop_bmm(B, true, T, T, d, q.data(), k.data(), ref_s.data());
    call();
    lines.push_back({"q k^T", f_prod, median_ms(call, reps),
                     median_ms([&] { sgemm_bmm(B, false, true, T, T, d, q.data(), k.data(), tmp_s.data()); }, reps),
                     median_ms([&] { loop_bmm(B, true, T, T, d, q.data(), k.data(), tmp_s.data()); }, reps),
                     wrong(ref_s, out_s)});
  }
  {
    auto call = [&] { f_values.call_into({sa, va}, {out_v.data()}); };
    loop_bmm(B, false, T, d, T, s.data(), v.data(), ref_v.data());
    call();
    lines.push_back({"s v", f_prod, median_ms(call, reps),
                     median_ms([&] { sgemm_bmm(B, false, false, T, d, T, s.data(), v.data(), tmp_v.data()); }, reps),
                     median_ms([&] { loop_bmm(B, false, T, d, T, s.data(), v.data(), tmp_v.data()); }, reps),
                     wrong(ref_v, out_v)});
  }
  {
    // The floor: the four products of the backward as sgemm loops (ones
    // for the upstream gradients, as the graph's).
    std::vector<float> ones_s(tt, 1.f), ones_v(qkv, 1.f);
    auto call = [&] { f_back.call_into({qa, ka, sa, va}, {dq.data(), dk.data(), ds.data(), dv.data()}); };
    call();
    auto floor = [&] {
      sgemm_bmm(B, false, false, T, d, T, ones_s.data(), k.data(), tmp_v.data());  // dq = g k
      sgemm_bmm(B, true, false, T, d, T, ones_s.data(), q.data(), tmp_v.data());   // dk = g^T q
      sgemm_bmm(B, false, true, T, T, d, ones_v.data(), v.data(), tmp_s.data());   // ds = g v^T
      sgemm_bmm(B, true, false, T, d, T, s.data(), ones_v.data(), tmp_v.data());   // dv = s^T g
    };
    // dv = s^T 1 by loops, checked against synk's.
    std::vector<float> ref_dv(qkv, 0.f);
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < T; ++j)
        for (int i = 0; i < T; ++i)
          for (int p = 0; p < d; ++p) ref_dv[(static_cast<size_t>(b) * T + j) * d + p] += s[(static_cast<size_t>(b) * T + i) * T + j];
    lines.push_back({"backward (4 products)", 4 * f_prod, median_ms(call, reps), median_ms(floor, reps), NAN,
                     wrong(ref_dv, dv)});
  }

  std::printf("# synk-bmm: N=%d H=%d T=%d d=%d (%d products per call), one BLAS thread, median of %d\n", n, heads, T, d,
              B, reps);
  std::printf("%-24s %10s %10s %12s %12s %12s %7s\n", "product", "synk(ms)", "GFLOP/s", "sgemm(ms)", "loop(ms)",
              "loop/synk", "#wrong");
  nlohmann::json rows = nlohmann::json::array();
  int64_t bad = 0;
  for (const Line& l : lines) {
    char loop[32] = "-", ratio[32] = "-";
    if (!std::isnan(l.loop_ms)) {
      std::snprintf(loop, sizeof loop, "%.3f", l.loop_ms);
      std::snprintf(ratio, sizeof ratio, "%.2fx", l.loop_ms / l.synk_ms);
    }
    std::printf("%-24s %10.3f %10.1f %12.3f %12s %12s %7lld\n", l.name, l.synk_ms, l.flop / l.synk_ms / 1e6,
                l.sgemm_ms, loop, ratio, static_cast<long long>(l.wrong));
    bad += l.wrong;
    rows.push_back({{"product", l.name}, {"synk_ms", l.synk_ms}, {"sgemm_loop_ms", l.sgemm_ms},
                    {"plain_loop_ms", std::isnan(l.loop_ms) ? nlohmann::json() : nlohmann::json(l.loop_ms)},
                    {"gflops", l.flop / l.synk_ms / 1e6}, {"wrong", l.wrong}});
  }
  if (!json_path.empty())
    bench::write_json(json_path, {{"n", n}, {"heads", heads}, {"tokens", T}, {"dim", d}, {"reps", reps}, {"rows", rows}});
  return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return bench::guarded_main("synk-bmm", run, argc, argv); }
