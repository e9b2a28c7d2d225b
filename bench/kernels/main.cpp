// synk-kernels — the reduction-style CUDA kernels of synk's executor
// (kernels/reduce.cu) timed against what the CUDA toolkit's libraries
// offer for the same job, each result checked against a CPU reference.
//
//   synk-kernels                          # every kernel at realistic sizes
//   synk-kernels --quick --json k.json    # small sizes (the GPU check's smoke run)
//   synk-kernels --only softmax,xent --iters 200
//
// Kernels (issue 16, item 7: what was read as slow before any GPU run):
//   full_sum   a whole tensor to one value (losses, means): synk's reduce
//              runs it in ONE 256-thread block; against cub::DeviceReduce
//              (float and double accumulation) and thrust::reduce.
//   axis0_sum  [rows, cols] summed over rows (bias gradients): synk runs one
//              block per column with strided reads; against
//              cub::DeviceSegmentedReduce over a strided iterator and
//              cublasSgemv (X^T times a ones vector).
//   softmax, argmax, xent (softmax cross-entropy): synk runs one THREAD per
//              row; against one warp (cub::WarpReduce) or one block
//              (cub::BlockReduce) per row, and cub::DeviceSegmentedReduce::ArgMax.
//
// Each line: the median of --iters timed calls (CUDA events around each
// call, after --warmup untimed ones), GB/s = bytes read + written / time,
// "vs synk" = synk's time / this time (above 1: faster than synk), and
// #wrong = outputs off the CPU reference (double precision; tolerances at
// each check). Without a CUDA device it prints one line ("skipped: no CUDA
// device ...") and exits with status 77 (CTest's skip code); with any #wrong
// it exits with status 1 after writing the table and --json.
//
// Not measured here, and left as they are until a GPU run says they cost
// something: the host-staged backend's synchronisation per staged piece
// (synk-collectives --device cuda --backend host-staged times it) and the
// cudaPointerGetAttributes per call in CudaSession's label check.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "alternatives.hpp"
#include "common/bench_main.hpp"
#include "common/gpu_info.hpp"
#include "cuda/device.hpp"
#include "exec/plan/geometry.hpp"
#include "ops.cuh"

namespace {

namespace kn = synk::kernels;
using synk::cuda::DeviceBuffer;

constexpr int kSkipStatus = 77;
const std::vector<std::string> kKernels = {"full_sum", "axis0_sum", "softmax", "argmax", "xent"};

struct Options {
  int iters = 50;
  int warmup = 5;
  bool quick = false;
  std::set<std::string> only;
};

// ---- device helpers ------------------------------------------------------------------------

class Event {
 public:
  Event() { SYNK_CUDA_CHECK(cudaEventCreate(&e_)); }
  ~Event() { (void)cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

class Stream {
 public:
  Stream() { SYNK_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() { (void)cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class Blas {
 public:
  explicit Blas(cudaStream_t s) {
    if (cublasCreate(&h_) != CUBLAS_STATUS_SUCCESS) throw synk::BackendError("cublasCreate failed");
    if (cublasSetStream(h_, s) != CUBLAS_STATUS_SUCCESS) throw synk::BackendError("cublasSetStream failed");
  }
  ~Blas() { (void)cublasDestroy(h_); }
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

template <class T> DeviceBuffer upload(const std::vector<T>& v) {
  DeviceBuffer b(std::max<size_t>(v.size(), 1) * sizeof(T));
  if (!v.empty()) b.upload(v.data());
  return b;
}

template <class T> std::vector<T> download(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  if (n) SYNK_CUDA_CHECK(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

template <class T> T* ptr(const DeviceBuffer& b) { return static_cast<T*>(b.data()); }

std::vector<float> uniform(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

bool close_to(double got, double ref, double atol, double rtol) {
  return std::isfinite(got) && std::fabs(got - ref) <= atol + rtol * std::fabs(ref);
}

// ---- one implementation, timed and checked -------------------------------------------------

struct Impl {
  std::string name;
  std::function<void(cudaStream_t)> run;  // enqueues one call
  std::function<int64_t()> wrong;         // after the runs: outputs off the CPU reference
};

struct Report {
  nlohmann::json rows = nlohmann::json::array();
  int64_t wrong = 0;
  int64_t checked = 0;
};

double median_us(const Impl& im, cudaStream_t s, const Options& o) {
  for (int i = 0; i < o.warmup; ++i) im.run(s);
  SYNK_CUDA_CHECK(cudaGetLastError());
  SYNK_CUDA_CHECK(cudaStreamSynchronize(s));
  Event a, b;
  std::vector<float> ms;
  for (int i = 0; i < o.iters; ++i) {
    SYNK_CUDA_CHECK(cudaEventRecord(a.get(), s));
    im.run(s);
    SYNK_CUDA_CHECK(cudaEventRecord(b.get(), s));
    SYNK_CUDA_CHECK(cudaEventSynchronize(b.get()));
    float t = 0.f;
    SYNK_CUDA_CHECK(cudaEventElapsedTime(&t, a.get(), b.get()));
    ms.push_back(t);
  }
  SYNK_CUDA_CHECK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  return 1e3 * ms[ms.size() / 2];
}

// Times every implementation of one case (the first is synk's) and prints
// one table line each.
void run_case(const std::string& kernel, int64_t rows, int64_t cols, double bytes, const std::vector<Impl>& impls,
              cudaStream_t s, const Options& o, Report& rep) {
  // The inputs were uploaded with cudaMemcpy, whose DMA from pageable memory
  // may still run when it returns, on the legacy stream, which `s` does not
  // wait for.
  SYNK_CUDA_CHECK(cudaDeviceSynchronize());
  double synk_us = 0;
  for (size_t i = 0; i < impls.size(); ++i) {
    const Impl& im = impls[i];
    const double us = median_us(im, s, o);
    SYNK_CUDA_CHECK(cudaStreamSynchronize(s));
    const int64_t wrong = im.wrong();
    if (i == 0) synk_us = us;
    const double gbps = bytes / (us * 1e-6) / 1e9;
    const double vs = us > 0 ? synk_us / us : 0;
    std::printf("  %-10s %8lld %8lld %13.0f %10.2f %9.2f %7.2fx %7lld  %s\n", kernel.c_str(),
                static_cast<long long>(rows), static_cast<long long>(cols), bytes, us, gbps, vs,
                static_cast<long long>(wrong), im.name.c_str());
    std::fflush(stdout);
    rep.rows.push_back({{"kernel", kernel}, {"impl", im.name}, {"rows", rows}, {"cols", cols}, {"bytes", bytes},
                        {"time_us", us}, {"gbps", gbps}, {"vs_synk", vs}, {"wrong", wrong}});
    rep.wrong += wrong;
    ++rep.checked;
  }
}

// CUB's temporary storage for the largest of several calls.
DeviceBuffer cub_temp(std::initializer_list<size_t> sizes) { return DeviceBuffer(std::max<size_t>(std::max(sizes), 1)); }

void cub_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw synk::BackendError(std::string(what) + " failed: " + cudaGetErrorString(e));
}

// ---- the kernels -----------------------------------------------------------------------------

void full_sum(int64_t n, cudaStream_t s, const Options& o, Report& rep) {
  const std::vector<float> hx = uniform(static_cast<size_t>(n), -1.f, 1.f, 1);
  double ref = 0, mag = 0;
  for (float v : hx) {
    ref += v;
    mag += std::fabs(v);
  }
  const double atol = 1e-6 + 1e-7 * mag;  // float accumulation over n terms
  DeviceBuffer x = upload(hx), y(sizeof(float)), yd(sizeof(double));
  size_t t1 = 0, t2 = 0;
  cub_check(synk_bench::cub_sum(nullptr, t1, ptr<float>(x), ptr<float>(y), n, s), "cub::DeviceReduce::Sum");
  cub_check(synk_bench::cub_sum_double(nullptr, t2, ptr<float>(x), ptr<double>(yd), n, s),
            "cub::DeviceReduce::TransformReduce");
  DeviceBuffer temp = cub_temp({t1, t2});
  const kn::Reduce g = synk::plan::make_reduce(synk::Shape{n}, {0});  // the planner's geometry
  auto check_f = [&] { return close_to(download<float>(y, 1)[0], ref, atol, 0) ? 0 : 1; };
  float thrust_out = NAN;
  std::vector<Impl> impls = {
      {"synk reduce_f32 (one 256-thread block, double acc)",
       [&](cudaStream_t st) { kn::reduce_f32(kn::ReduceKind::Sum, g, 1.f, ptr<float>(x), ptr<float>(y), st); }, check_f},
      {"cub::DeviceReduce::Sum (float acc)",
       [&](cudaStream_t st) {
         size_t b = temp.bytes();
         cub_check(synk_bench::cub_sum(temp.data(), b, ptr<float>(x), ptr<float>(y), n, st), "cub::DeviceReduce::Sum");
       },
       check_f},
      {"cub::DeviceReduce::TransformReduce (double acc)",
       [&](cudaStream_t st) {
         size_t b = temp.bytes();
         cub_check(synk_bench::cub_sum_double(temp.data(), b, ptr<float>(x), ptr<double>(yd), n, st),
                   "cub::DeviceReduce::TransformReduce");
       },
       [&] { return close_to(download<double>(yd, 1)[0], ref, atol, 0) ? 0 : 1; }},
      {"thrust::reduce (allocates, result to host)",
       [&](cudaStream_t st) { thrust_out = synk_bench::thrust_sum(ptr<float>(x), n, st); },
       [&] { return close_to(thrust_out, ref, atol, 0) ? 0 : 1; }},
  };
  run_case("full_sum", 1, n, static_cast<double>(n + 1) * 4, impls, s, o, rep);
}

void axis0_sum(int64_t rows, int64_t cols, cudaStream_t s, const Blas& blas, const Options& o, Report& rep) {
  const std::vector<float> hx = uniform(static_cast<size_t>(rows * cols), -1.f, 1.f, 2);
  std::vector<double> ref(static_cast<size_t>(cols), 0.0), mag(static_cast<size_t>(cols), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      ref[static_cast<size_t>(c)] += hx[static_cast<size_t>(r * cols + c)];
      mag[static_cast<size_t>(c)] += std::fabs(hx[static_cast<size_t>(r * cols + c)]);
    }
  DeviceBuffer x = upload(hx), y(static_cast<size_t>(cols) * sizeof(float));
  DeviceBuffer ones = upload(std::vector<float>(static_cast<size_t>(rows), 1.f));
  size_t tb = 0;
  cub_check(synk_bench::cub_column_sums(nullptr, tb, ptr<float>(x), ptr<float>(y), rows, cols, s),
            "cub::DeviceSegmentedReduce::Sum");
  DeviceBuffer temp = cub_temp({tb});
  const kn::Reduce g = synk::plan::make_reduce(synk::Shape{rows, cols}, {0});
  auto check = [&] {
    const std::vector<float> got = download<float>(y, static_cast<size_t>(cols));
    int64_t bad = 0;
    for (size_t c = 0; c < got.size(); ++c) bad += close_to(got[c], ref[c], 1e-6 + 1e-7 * mag[c], 0) ? 0 : 1;
    return bad;
  };
  std::vector<Impl> impls = {
      {"synk reduce_f32 (block per column, strided reads)",
       [&](cudaStream_t st) { kn::reduce_f32(kn::ReduceKind::Sum, g, 1.f, ptr<float>(x), ptr<float>(y), st); }, check},
      {"cub::DeviceSegmentedReduce::Sum (strided iterator)",
       [&](cudaStream_t st) {
         size_t b = temp.bytes();
         cub_check(synk_bench::cub_column_sums(temp.data(), b, ptr<float>(x), ptr<float>(y), rows, cols, st),
                   "cub::DeviceSegmentedReduce::Sum");
       },
       check},
      {"cublasSgemv (X^T ones)",
       [&](cudaStream_t) {
         const float one = 1.f, zero = 0.f;
         if (cublasSgemv(blas.get(), CUBLAS_OP_N, static_cast<int>(cols), static_cast<int>(rows), &one, ptr<float>(x),
                         static_cast<int>(cols), ptr<float>(ones), 1, &zero, ptr<float>(y), 1) != CUBLAS_STATUS_SUCCESS)
           throw synk::BackendError("cublasSgemv failed");
       },
       check},
  };
  run_case("axis0_sum", rows, cols, static_cast<double>(rows * cols + cols) * 4, impls, s, o, rep);
}

// Logits of `rows` rows of `cols` classes, and the CPU's per-row max and
// sum of exp(x - max) in double.
struct Rows {
  std::vector<float> x;
  std::vector<double> max, sum;
  Rows(int64_t rows, int64_t cols, uint32_t seed) : x(uniform(static_cast<size_t>(rows * cols), -4.f, 4.f, seed)) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* p = x.data() + r * cols;
      double m = -INFINITY, e = 0;
      for (int64_t k = 0; k < cols; ++k) m = std::max<double>(m, p[k]);
      for (int64_t k = 0; k < cols; ++k) e += std::exp(static_cast<double>(p[k]) - m);
      max.push_back(m);
      sum.push_back(e);
    }
  }
};

void softmax(int64_t rows, int64_t cols, cudaStream_t s, const Options& o, Report& rep) {
  const Rows h(rows, cols, 3);
  DeviceBuffer x = upload(h.x), y(h.x.size() * sizeof(float));
  auto check = [&] {
    const std::vector<float> got = download<float>(y, h.x.size());
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < cols; ++k) {
        const size_t i = static_cast<size_t>(r * cols + k);
        const double ref = std::exp(static_cast<double>(h.x[i]) - h.max[static_cast<size_t>(r)]) / h.sum[static_cast<size_t>(r)];
        bad += close_to(got[i], ref, 1e-7, 1e-4) ? 0 : 1;
      }
    return bad;
  };
  const kn::AxisGeom g{rows, cols, 1};
  std::vector<Impl> impls = {
      {"synk softmax (thread per row)",
       [&](cudaStream_t st) { kn::softmax(g, ptr<float>(x), ptr<float>(y), false, st); }, check},
      {"cub::WarpReduce (warp per row)",
       [&](cudaStream_t st) { synk_bench::warp_softmax(ptr<float>(x), ptr<float>(y), rows, cols, st); }, check},
      {"cub::BlockReduce (256-thread block per row)",
       [&](cudaStream_t st) { synk_bench::block_softmax(ptr<float>(x), ptr<float>(y), rows, cols, st); }, check},
  };
  run_case("softmax", rows, cols, 2.0 * static_cast<double>(rows * cols) * 4, impls, s, o, rep);
}

void argmax(int64_t rows, int64_t cols, cudaStream_t s, const Options& o, Report& rep) {
  const Rows h(rows, cols, 4);
  std::vector<int32_t> ref(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = h.x.data() + r * cols;
    ref[static_cast<size_t>(r)] = static_cast<int32_t>(std::max_element(p, p + cols) - p);  // the first largest
  }
  DeviceBuffer x = upload(h.x), idx(static_cast<size_t>(rows) * sizeof(int32_t));
  DeviceBuffer pairs(static_cast<size_t>(rows) * synk_bench::argmax_pair_bytes());
  size_t tb = 0;
  cub_check(synk_bench::cub_row_argmax(nullptr, tb, ptr<float>(x), pairs.data(), rows, cols, s),
            "cub::DeviceSegmentedReduce::ArgMax");
  DeviceBuffer temp = cub_temp({tb});
  auto check = [&] {
    const std::vector<int32_t> got = download<int32_t>(idx, static_cast<size_t>(rows));
    int64_t bad = 0;
    for (size_t r = 0; r < got.size(); ++r) bad += got[r] == ref[r] ? 0 : 1;
    return bad;
  };
  const kn::AxisGeom g{rows, cols, 1};
  std::vector<Impl> impls = {
      {"synk argmax_f32 (thread per row)",
       [&](cudaStream_t st) { kn::argmax_f32(g, ptr<float>(x), ptr<int32_t>(idx), st); }, check},
      {"cub::DeviceSegmentedReduce::ArgMax (key-value pairs)",
       [&](cudaStream_t st) {
         size_t b = temp.bytes();
         cub_check(synk_bench::cub_row_argmax(temp.data(), b, ptr<float>(x), pairs.data(), rows, cols, st),
                   "cub::DeviceSegmentedReduce::ArgMax");
       },
       [&] {
         SYNK_CUDA_CHECK(cudaMemsetAsync(idx.data(), 0xff, idx.bytes(), s));
         synk_bench::argmax_pairs_to_index(pairs.data(), ptr<int32_t>(idx), rows, s);
         SYNK_CUDA_CHECK(cudaGetLastError());
         SYNK_CUDA_CHECK(cudaStreamSynchronize(s));
         return check();
       }},
  };
  run_case("argmax", rows, cols, static_cast<double>(rows * cols + rows) * 4, impls, s, o, rep);
}

void xent(int64_t rows, int64_t cols, cudaStream_t s, const Options& o, Report& rep) {
  const Rows h(rows, cols, 5);
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  std::mt19937 gen(6);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(cols - 1));
  for (int32_t& l : labels) l = d(gen);
  std::vector<double> ref(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const size_t ri = static_cast<size_t>(r);
    ref[ri] = h.max[ri] + std::log(h.sum[ri]) - h.x[static_cast<size_t>(r * cols + labels[ri])];
  }
  DeviceBuffer x = upload(h.x), lab = upload(labels), loss(static_cast<size_t>(rows) * sizeof(float));
  DeviceBuffer bad_row = upload(std::vector<unsigned long long>{~0ull});
  auto check = [&] {
    const std::vector<float> got = download<float>(loss, static_cast<size_t>(rows));
    int64_t bad = 0;
    for (size_t r = 0; r < got.size(); ++r) bad += close_to(got[r], ref[r], 1e-5, 1e-5) ? 0 : 1;
    return bad;
  };
  std::vector<Impl> impls = {
      {"synk softmax_xent (thread per row)",
       [&](cudaStream_t st) {
         kn::softmax_xent(rows, cols, ptr<float>(x), ptr<int32_t>(lab), ptr<float>(loss),
                          ptr<unsigned long long>(bad_row), st);
       },
       check},
      {"cub::WarpReduce (warp per row)",
       [&](cudaStream_t st) {
         synk_bench::warp_xent(ptr<float>(x), ptr<int32_t>(lab), ptr<float>(loss), rows, cols, st);
       },
       check},
      {"cub::BlockReduce (256-thread block per row)",
       [&](cudaStream_t st) {
         synk_bench::block_xent(ptr<float>(x), ptr<int32_t>(lab), ptr<float>(loss), rows, cols, st);
       },
       check},
  };
  run_case("xent", rows, cols, static_cast<double>(rows * cols + 2 * rows) * 4, impls, s, o, rep);
}

// ---- main ------------------------------------------------------------------------------------

std::set<std::string> parse_only(const std::string& s) {
  std::set<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (std::find(kKernels.begin(), kKernels.end(), item) == kKernels.end())
      throw synk::ArgumentError("--only: '" + item + "' is not a kernel (full_sum, axis0_sum, softmax, argmax, xent)");
    out.insert(item);
  }
  if (out.empty()) throw synk::ArgumentError("--only: empty list");
  return out;
}

int run(int argc, char** argv) {
  CLI::App app{"synk-kernels: synk's reduction-style CUDA kernels against CUB, Thrust and cuBLAS"};
  Options o;
  std::string only_s, json_path;
  int device = 0;
  app.add_option("--iters", o.iters, "timed calls per implementation (the median is reported)")
      ->check(bench::integer(1, 100000));
  app.add_option("--warmup", o.warmup, "untimed calls before the timed ones")->check(bench::integer(0, 1000));
  app.add_flag("--quick", o.quick, "small sizes only (a smoke run)");
  app.add_option("--only", only_s, "comma-separated kernels: full_sum, axis0_sum, softmax, argmax, xent");
  app.add_option("--device", device, "CUDA device ordinal")->check(bench::integer(0, 1023));
  app.add_option("--json", json_path, "write the results as JSON to this file")->check(bench::writable_file());
  if (!bench::parse(app, argc, argv)) return 0;
  o.only = only_s.empty() ? std::set<std::string>(kKernels.begin(), kKernels.end()) : parse_only(only_s);

  const synk::cuda::DeviceProbe probe = synk::cuda::probe_devices();
  if (probe.count == 0) {
    std::fprintf(stderr, "synk-kernels: skipped: %s\n", probe.describe().c_str());
    return kSkipStatus;
  }
  if (device >= probe.count)
    throw synk::ArgumentError("--device: " + std::to_string(device) + " but " + std::to_string(probe.count) +
                              " CUDA device(s) are visible");
  SYNK_CUDA_CHECK(cudaSetDevice(device));
  const bench::GpuInfo info = bench::gpu_info(device);
  Stream stream;
  const Blas blas(stream.get());
  const cudaStream_t s = stream.get();

  std::printf("# synk-kernels: %s\n", bench::describe(info).c_str());
  std::printf("# median of %d timed calls after %d warm-up calls; GB/s: bytes read + written per call / time;\n"
              "# vs synk: synk's time / this time; #wrong: outputs off the CPU reference\n#\n",
              o.iters, o.warmup);
  std::printf("  %-10s %8s %8s %13s %10s %9s %8s %7s  %s\n", "kernel", "rows", "cols", "bytes", "time(us)", "GB/s",
              "vs synk", "#wrong", "implementation");
  Report rep;
  auto want = [&](const char* k) { return o.only.count(k) > 0; };
  if (want("full_sum"))
    for (int64_t n : o.quick ? std::vector<int64_t>{1000, 1 << 16}
                             : std::vector<int64_t>{1000, 1 << 16, 1 << 20, 1 << 24})
      full_sum(n, s, o, rep);
  using Shape = std::pair<int64_t, int64_t>;
  if (want("axis0_sum"))
    for (auto [r, c] : o.quick ? std::vector<Shape>{{128, 800}}
                               : std::vector<Shape>{{128, 800}, {512, 800}, {4096, 1024}, {32768, 128}})
      axis0_sum(r, c, s, blas, o, rep);
  const std::vector<Shape> row_shapes =
      o.quick ? std::vector<Shape>{{128, 10}, {256, 1000}}
              : std::vector<Shape>{{128, 10}, {4096, 10}, {65536, 10}, {1024, 1000}, {256, 32000}};
  if (want("softmax"))
    for (auto [r, c] : row_shapes) softmax(r, c, s, o, rep);
  if (want("argmax"))
    for (auto [r, c] : row_shapes) argmax(r, c, s, o, rep);
  if (want("xent"))
    for (auto [r, c] : row_shapes) xent(r, c, s, o, rep);

  if (!json_path.empty())
    bench::write_json(json_path, {{"gpu", bench::to_json(info)},
                                  {"iters", o.iters},
                                  {"warmup", o.warmup},
                                  {"quick", o.quick},
                                  {"results", rep.rows}});
  if (rep.wrong > 0)
    throw synk::BackendError(std::to_string(rep.wrong) + " output(s) off the CPU reference (see #wrong)");
  std::printf("# all %lld results match the CPU reference\n", static_cast<long long>(rep.checked));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench::guarded_main("synk-kernels", run, argc, argv); }
