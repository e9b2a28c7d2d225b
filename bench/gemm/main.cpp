// synk-gemm — the sgemm calls of one MLP training step, timed at several
// batch sizes, alone and with a copy running on every other core at once.
//
// It answers the question behind `synk-mnist --workers N` scaling: a rank
// that trains on 1/N of the batch calls the same sgemm shapes with 1/N of
// the rows. OpenBLAS packs the weight matrix (and writes the whole weight
// gradient) once per call whatever the row count, so per row a smaller
// share costs more; ranks on neighbouring cores also share the L3 and the
// memory bus. Both losses happen below synk, in the BLAS, and this measures
// them without the runtime in the way.
//
//   synk-gemm --rows 250,500 --copies 1          # one process
//   synk-gemm --rows 250 --copies 2              # two processes at once (synk::fork + map)
//   synk-gemm --rows 250 --copies 2 --operands distinct   # each layer's operands in their own memory
//
// Per step: for each dense layer (in -> out), forward X[r,in] W[in,out],
// weight gradient X^T dY, and (except the first layer) input gradient
// dY W^T — the calls synk's CPU executor makes for nn::dense.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <sstream>
#include <vector>

#include <cblas.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <synk/synk.hpp>

#include "common/bench_main.hpp"

namespace {

constexpr int kMaxLayers = 16;

// One measurement, trivially copyable so that map can carry it.
struct Job {
  int rows = 0;
  int reps = 0;
  int n_sizes = 0;
  int sizes[kMaxLayers + 1] = {};
  bool distinct = false;  // --operands distinct
};
struct Result {
  double median_ms = 0;  // one step's sgemm calls
  double gflop = 0;      // per step
};

Result time_step(const Job& j) {
  // One BLAS thread per process, as synk's CPU executor runs it (OpenBLAS
  // would otherwise use every core, and copies would fight over them).
  openblas_set_num_threads(1);
  struct Call {
    bool ta, tb;
    int m, n, k;
    const float *a, *b;
    float* c;
  };
  const int L = j.n_sizes - 1, R = j.rows;
  auto in = [&](int l) { return j.sizes[l]; };
  auto out = [&](int l) { return j.sizes[l + 1]; };
  // Operands. shared: one set sized for the largest call, every call
  // reading and writing the same three buffers (the working set of one
  // layer). distinct: what the executor holds, each in its own memory: the
  // activations X[l] (rows x in), weights W[l], output gradients dY[l]
  // (rows x out) and weight gradients dW[l] of every layer, so two
  // processes at once also compete for the L3 with a whole step's working
  // set.
  std::vector<std::vector<float>> X(static_cast<size_t>(L) + 1), W(L), dY(L), dW(L);
  size_t most = 0;
  for (int l = 0; l < L; ++l)
    most = std::max(most, static_cast<size_t>(std::max({R, in(l), out(l)})) * static_cast<size_t>(std::max(in(l), out(l))));
  std::vector<float> a, b, c;
  if (j.distinct) {
    for (int l = 0; l <= L; ++l) X[static_cast<size_t>(l)].assign(static_cast<size_t>(R) * j.sizes[l], 0.01f);
    for (int l = 0; l < L; ++l) {
      W[static_cast<size_t>(l)].assign(static_cast<size_t>(in(l)) * out(l), 0.02f);
      dW[static_cast<size_t>(l)].assign(static_cast<size_t>(in(l)) * out(l), 0.f);
      dY[static_cast<size_t>(l)].assign(static_cast<size_t>(R) * out(l), 0.01f);
    }
  } else {
    a.assign(most, 0.01f), b.assign(most, 0.02f), c.assign(most, 0.f);
  }
  auto op = [&](std::vector<std::vector<float>>& v, int l, std::vector<float>& shared_one) -> float* {
    return j.distinct ? v[static_cast<size_t>(l)].data() : shared_one.data();
  };
  auto forward = [&](int l) -> Call {  // X[l+1] = X[l] W[l]
    return {false, false, R, out(l), in(l), op(X, l, a), op(W, l, b), op(X, l + 1, c)};
  };
  auto weight_grad = [&](int l) -> Call {  // dW[l] = X[l]^T dY[l]
    return {true, false, in(l), out(l), R, op(X, l, a), op(dY, l, b), op(dW, l, c)};
  };
  auto input_grad = [&](int l) -> Call {  // dY[l-1] = dY[l] W[l]^T
    return {false, true, R, in(l), out(l), op(dY, l, a), op(W, l, b), op(dY, l - 1, c)};
  };
  // distinct: the executor's order (forward, then backward last layer
  // first); shared: layer by layer, as this tool always measured it (with
  // one set of buffers the order changes nothing).
  std::vector<Call> calls;
  if (j.distinct) {
    for (int l = 0; l < L; ++l) calls.push_back(forward(l));
    for (int l = L - 1; l >= 0; --l) {
      calls.push_back(weight_grad(l));
      if (l > 0) calls.push_back(input_grad(l));
    }
  } else {
    for (int l = 0; l < L; ++l) {
      calls.push_back(forward(l));
      calls.push_back(weight_grad(l));
      if (l > 0) calls.push_back(input_grad(l));
    }
  }
  double flop = 0;
  for (const Call& k : calls) flop += 2.0 * k.m * k.n * k.k;
  std::vector<double> ms;
  for (int r = 0; r < j.reps + 2; ++r) {  // two untimed warm-up steps
    const auto t0 = std::chrono::steady_clock::now();
    for (const Call& k : calls)
      cblas_sgemm(CblasRowMajor, k.ta ? CblasTrans : CblasNoTrans, k.tb ? CblasTrans : CblasNoTrans, k.m, k.n, k.k,
                  1.f, k.a, k.ta ? k.m : k.k, k.b, k.tb ? k.k : k.n, 0.f, k.c, k.n);
    if (r >= 2) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], flop / 1e9};
}

std::vector<int> parse_list(const std::string& s, const char* flag) {
  std::vector<int> v;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      const int x = std::stoi(item, &used);
      if (used != item.size() || x < 1) throw std::invalid_argument(item);
      v.push_back(x);
    } catch (const std::exception&) {
      throw synk::ArgumentError(std::string(flag) + " " + s + ": '" + item + "' is not a positive integer");
    }
  }
  if (v.empty()) throw synk::ArgumentError(std::string(flag) + ": empty list");
  return v;
}

int run(int argc, char** argv) {
  CLI::App app{"synk-gemm: the sgemm calls of one MLP training step at several batch sizes"};
  std::string rows_s = "125,250,500", layers_s = "784,800,800,10", json_path;
  int copies = 1, reps = 40;
  std::string operands = "shared";
  app.add_option("--rows", rows_s, "comma-separated rows per process (batch share)");
  app.add_option("--layers", layers_s, "comma-separated layer sizes, input first");
  app.add_option("--copies", copies, "processes running the same measurement at once, one per core")
      ->check(bench::integer(1, 256));
  app.add_option("--reps", reps, "timed steps per measurement (the median is reported)")
      ->check(bench::integer(1, 100000));
  app.add_option("--operands", operands,
                 "shared: one set of buffers for every call (the sgemm alone); distinct: each layer's activations, "
                 "weights and gradients in their own memory, as the executor holds them")
      ->check(CLI::IsMember({"shared", "distinct"}));
  app.add_option("--json", json_path, "write the results as JSON to this file")->check(bench::writable_file());
  if (!bench::parse(app, argc, argv)) return 0;
  const std::vector<int> rows = parse_list(rows_s, "--rows");
  const std::vector<int> sizes = parse_list(layers_s, "--layers");
  if (sizes.size() < 2 || sizes.size() > kMaxLayers + 1)
    throw synk::ArgumentError("--layers " + layers_s + ": needs 2 to " + std::to_string(kMaxLayers + 1) + " sizes");

  synk::Runtime rt = synk::fork({.workers = copies});
  std::printf("synk-gemm: layers %s, %d process(es) at once, median of %d steps, single-threaded BLAS, %s operands\n",
              layers_s.c_str(), copies, reps, operands.c_str());
  std::printf("%8s %12s %10s %16s %12s\n", "rows", "step(ms)", "GFLOP/s", "ms per 250 rows", "vs largest");
  nlohmann::json out_rows = nlohmann::json::array();
  std::vector<std::pair<int, double>> per_row;
  for (int r : rows) {
    Job j;
    j.rows = r;
    j.reps = reps;
    j.distinct = operands == "distinct";
    j.n_sizes = static_cast<int>(sizes.size());
    std::copy(sizes.begin(), sizes.end(), j.sizes);
    // One job per rank: every process measures at the same time.
    const std::vector<Result> res = rt.map(&time_step, std::vector<Job>(static_cast<size_t>(copies), j));
    std::vector<double> by_rank;
    for (const Result& x : res) by_rank.push_back(x.median_ms);
    std::vector<double> med = by_rank;
    std::sort(med.begin(), med.end());
    const double ms = med[med.size() / 2];  // the median process (of two: the slower)
    per_row.emplace_back(r, ms / r);
    out_rows.push_back({{"rows", r}, {"step_ms", ms}, {"gflops", res[0].gflop / (ms / 1e3)},
                        {"ms_per_250_rows", ms * 250.0 / r}, {"per_process_ms", med}, {"per_rank_ms", by_rank}});
  }
  // "vs largest": per-row cost relative to the largest row count measured.
  const auto largest = *std::max_element(per_row.begin(), per_row.end(),
                                         [](const auto& x, const auto& y) { return x.first < y.first; });
  for (size_t i = 0; i < per_row.size(); ++i) {
    const auto& row = out_rows[i];
    const double rel = per_row[i].second / largest.second;
    out_rows[i]["per_row_vs_largest"] = rel;
    std::printf("%8d %12.3f %10.1f %16.3f %11.3fx\n", row["rows"].get<int>(), row["step_ms"].get<double>(),
                row["gflops"].get<double>(), row["ms_per_250_rows"].get<double>(), rel);
  }
  rt.close();
  if (!json_path.empty()) {
    nlohmann::json j = {{"layers", sizes}, {"copies", copies}, {"reps", reps}, {"operands", operands}, {"rows", out_rows}};
    bench::write_json(json_path, j);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("synk-gemm", run, argc, argv);
}
