// tests/cuda_emu/kernel_tests.cu — tests of the emulation's kernel launcher
// (launch.cpp, kernel_emu.hpp), compiled like kernels/*.cu: as C++ under
// kernel_emu.hpp. They need only the emulated runtime's memory, streams and
// errors, not the rest of synk; kernels/pointwise.cu and reduce.cu are
// compiled in too, to time them and to run the real reduction.
//
// What they check: a shared-memory reduction is right for every block size
// (so __shared__ is per block and the barrier holds the threads); the same
// reduction without its first barrier goes wrong under the random thread
// order; barriers that some threads exit without, or two different
// barriers, fail the launch naming the kernel (sticky, so those run in a
// child process: death tests); launches from two host threads at once stay
// apart; bad launch configurations and host pointers are refused as CUDA
// refuses them.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "emu.hpp"
#include "launch.cuh"
#include "ops.cuh"

namespace {

#define CHECK_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(&p, (n ? n : 1) * sizeof(T)), cudaSuccess); }
  ~Dev() { cudaFree(p); }
  void put(const std::vector<T>& h) { EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

constexpr int kMaxBlock = 1024;

// One block per row: each thread sums a stride of the row, then a tree in
// shared memory (the pattern of kernels/reduce.cu).
__global__ void row_sum(int64_t cols, const int32_t* x, int32_t* y) {
  __shared__ int32_t buf[kMaxBlock];
  const int tid = threadIdx.x;
  const int32_t* r = x + blockIdx.x * cols;
  int32_t acc = 0;
  for (int64_t c = tid; c < cols; c += blockDim.x) acc += r[c];
  buf[tid] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) buf[tid] += buf[tid + s];
    __syncthreads();
  }
  if (tid == 0) y[blockIdx.x] = buf[0];
}

// The same without the barrier between filling buf and the tree: a thread
// may read a neighbour's slot before the neighbour wrote it.
__global__ void row_sum_missing_barrier(int64_t cols, const int32_t* x, int32_t* y) {
  __shared__ int32_t buf[kMaxBlock];
  const int tid = threadIdx.x;
  const int32_t* r = x + blockIdx.x * cols;
  int32_t acc = 0;
  for (int64_t c = tid; c < cols; c += blockDim.x) acc += r[c];
  buf[tid] = acc;
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) buf[tid] += buf[tid + s];
    __syncthreads();
  }
  if (tid == 0) y[blockIdx.x] = buf[0];
}

// Each thread reads the slot its left neighbour wrote, with the barrier
// missing: right if the threads ran in index order (each neighbour would
// have written already), wrong under a random order.
__global__ void shift_missing_barrier(const int32_t* x, int32_t* y) {
  __shared__ int32_t buf[kMaxBlock];
  const int tid = threadIdx.x;
  buf[tid] = x[blockIdx.x * blockDim.x + tid];
  y[blockIdx.x * blockDim.x + tid] = buf[tid > 0 ? tid - 1 : 0];
  __syncthreads();
}

// Threads >= keep return before the barrier (keep < 0: none do).
__global__ void early_exit(int keep, int32_t* y) {
  if (keep >= 0 && static_cast<int>(threadIdx.x) >= keep) return;
  __syncthreads();
  y[threadIdx.x] = 1;
}

// Thread 0 leaves at once, the others wait at a barrier.
__global__ void first_thread_exits(int32_t* y) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  y[threadIdx.x] = 1;
}

// Odd and even threads wait at two different barriers.
__global__ void two_barriers(int32_t* y) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  y[threadIdx.x] = 1;
}

// Every thread of a 3-d grid of 3-d blocks writes its global linear index.
__global__ void write_index(int32_t* y) {
  const uint32_t b = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const uint32_t t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const uint32_t per = blockDim.x * blockDim.y * blockDim.z;
  atomicAdd(reinterpret_cast<unsigned*>(&y[b * per + t]), b * per + t + 1);
}

__global__ void touch(int32_t* y) { y[0] = 1; }

std::vector<int32_t> random_ints(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(-1000, 1000);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<int32_t> host_row_sums(const std::vector<int32_t>& x, int64_t rows, int64_t cols) {
  std::vector<int32_t> y(rows, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) y[r] += x[r * cols + c];
  return y;
}

TEST(EmuKernels, SharedMemoryReductionForEveryBlockSize) {
  const int64_t rows = 7, cols = 3001;
  const auto x = random_ints(rows * cols, 1);
  Dev<int32_t> dx(x.size()), dy(rows);
  dx.put(x);
  for (int threads : {1, 2, 32, 64, 128, 256, 512, 1024}) {
    SYNK_LAUNCH(row_sum, rows, threads, 0, nullptr)(cols, dx.p, dy.p);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(dy.get(), host_row_sums(x, rows, cols)) << threads << " threads, SYNK_EMU_SEED="
                                                      << synk_emu::kernel::order_seed();
  }
}

// A kernel missing a barrier reads stale shared memory. The tree reduction
// goes wrong even in index order (low threads read high slots); the shift
// goes wrong only because the order is random: that is its point.
TEST(EmuKernels, MissingBarrierGivesWrongResults) {
  {
    const int blocks = 8, threads = 256;
    const auto x = random_ints(blocks * threads, 5);
    Dev<int32_t> dx(x.size()), dy(x.size());
    dx.put(x);
    SYNK_LAUNCH(shift_missing_barrier, blocks, threads, 0, nullptr)(dx.p, dy.p);
    CHECK_CUDA(cudaDeviceSynchronize());
    const auto y = dy.get();
    int wrong = 0;
    for (int b = 0; b < blocks; ++b)
      for (int t = 0; t < threads; ++t) wrong += y[b * threads + t] != x[b * threads + (t > 0 ? t - 1 : 0)];
    EXPECT_GT(wrong, 0) << "the shift missing its barrier read every neighbour's fresh value: threads ran in "
                           "index order? SYNK_EMU_SEED=" << synk_emu::kernel::order_seed();
    std::printf("missing barrier (shift): %d of %d values stale\n", wrong, blocks * threads);
  }
  const int64_t rows = 64, cols = 256;
  int wrong = 0;
  for (uint32_t trial = 0; trial < 4; ++trial) {
    const auto x = random_ints(rows * cols, 100 + trial);
    Dev<int32_t> dx(x.size()), dy(rows);
    dx.put(x);
    SYNK_LAUNCH(row_sum_missing_barrier, rows, 256, 0, nullptr)(cols, dx.p, dy.p);
    CHECK_CUDA(cudaDeviceSynchronize());
    const auto want = host_row_sums(x, rows, cols);
    const auto got = dy.get();
    for (int64_t r = 0; r < rows; ++r) wrong += got[r] != want[r];
    // The correct kernel on the same data is right.
    SYNK_LAUNCH(row_sum, rows, 256, 0, nullptr)(cols, dx.p, dy.p);
    CHECK_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(dy.get(), want);
  }
  EXPECT_GT(wrong, 0) << "a reduction missing its first __syncthreads() gave right sums for all rows, "
                         "SYNK_EMU_SEED=" << synk_emu::kernel::order_seed();
  std::printf("missing barrier: %d of %d row sums wrong\n", wrong, static_cast<int>(4 * rows));
}

// kernels/reduce.cu's reduction itself (the kernel the random test runs
// through the executor's launcher), over rows and over everything.
TEST(EmuKernels, RealReductionKernel) {
  using synk::plan::Reduce;
  const int64_t rows = 300, cols = 1000;
  std::vector<float> x(rows * cols);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-1.f, 1.f);
  for (auto& v : x) v = d(rng);
  Dev<float> dx(x.size()), dy(rows);
  dx.put(x);
  Reduce g{};  // [rows, cols] over axis 1
  g.nk = 1;
  g.kdim[0] = rows;
  g.kstride[0] = cols;
  g.nr = 1;
  g.rdim[0] = cols;
  g.rstride[0] = 1;
  g.r_count = cols;
  g.out_numel = rows;
  g.in_numel = rows * cols;
  synk::kernels::reduce_f32(synk::plan::ReduceKind::Sum, g, 1.f, dx.p, dy.p, nullptr);
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto y = dy.get();
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += x[r * cols + c];
    ASSERT_NEAR(y[r], s, 1e-4) << "row " << r << ", SYNK_EMU_SEED=" << synk_emu::kernel::order_seed();
  }
}

TEST(EmuKernels, MultiDimensionalGridsAndBlocks) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const size_t n = 12 * 24;
  Dev<int32_t> dy(n);
  CHECK_CUDA(cudaMemset(dy.p, 0, n * sizeof(int32_t)));
  SYNK_LAUNCH(write_index, grid, block, 0, nullptr)(dy.p);
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<int32_t> want(n);
  std::iota(want.begin(), want.end(), 1);
  EXPECT_EQ(dy.get(), want);
}

// Two host threads launch barrier kernels at once on their own streams: the
// grids run on two OS threads at once, each with its own shared memory.
TEST(EmuKernels, ConcurrentLaunchesKeepSharedMemoryApart) {
  const int64_t rows = 16, cols = 777;
  auto worker = [&](uint32_t seed, int* bad) {
    cudaStream_t s;
    if (cudaStreamCreate(&s) != cudaSuccess) {
      *bad = -1;
      return;
    }
    for (int i = 0; i < 40; ++i) {
      const auto x = random_ints(rows * cols, seed + i);
      Dev<int32_t> dx(x.size()), dy(rows);
      dx.put(x);
      SYNK_LAUNCH(row_sum, rows, 128, 0, s)(cols, dx.p, dy.p);
      cudaStreamSynchronize(s);
      *bad += dy.get() != host_row_sums(x, rows, cols);
    }
    cudaStreamDestroy(s);
  };
  int bad1 = 0, bad2 = 0;
  std::thread a(worker, 1000u, &bad1), b(worker, 2000u, &bad2);
  a.join();
  b.join();
  EXPECT_EQ(bad1, 0);
  EXPECT_EQ(bad2, 0);
}

TEST(EmuKernels, BadConfigurationIsRefusedNotSticky) {
  Dev<int32_t> dy(1);
  SYNK_LAUNCH(touch, 1, 2048, 0, nullptr)(dy.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  SYNK_LAUNCH(touch, 0, 32, 0, nullptr)(dy.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  SYNK_LAUNCH(touch, 1, dim3(8, 8, 65), 0, nullptr)(dy.p);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  SYNK_LAUNCH(touch, 1, 1, 0, nullptr)(dy.p);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(dy.get()[0], 1);
}

// A launch failure is sticky for the whole process, as on a GPU: each of
// these runs in a child (death test, re-executed: no CUDA state inherited)
// that exits 0 when the failure was reported as expected.
class EmuKernelFaults : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

void expect_launch_failure(cudaError_t want) {
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != want) {
    std::fprintf(stderr, "synchronize returned %s\n", cudaGetErrorName(e));
    std::exit(1);
  }
  // Sticky: a later launch and synchronisation fail too.
  int32_t* p = nullptr;
  if (cudaMalloc(&p, 4) == cudaSuccess) std::exit(2);
  std::exit(0);
}

TEST_F(EmuKernelFaults, BarrierAfterOthersExitedInDirectMode) {
  EXPECT_EXIT(
      {
        Dev<int32_t> dy(64);
        SYNK_LAUNCH(first_thread_exits, 1, 64, 0, nullptr)(dy.p);
        expect_launch_failure(cudaErrorLaunchFailure);
      },
      ::testing::ExitedWithCode(0), "first_thread_exits.*exited without reaching.*SYNK_EMU_SEED=");
}

TEST_F(EmuKernelFaults, BarrierAfterOthersExitedAsFibers) {
  EXPECT_EXIT(
      {
        Dev<int32_t> dy(64);
        SYNK_LAUNCH(early_exit, 2, 64, 0, nullptr)(-1, dy.p);  // fine: marks the kernel as one with barriers
        if (cudaDeviceSynchronize() != cudaSuccess) std::exit(3);
        SYNK_LAUNCH(early_exit, 2, 64, 0, nullptr)(40, dy.p);
        expect_launch_failure(cudaErrorLaunchFailure);
      },
      ::testing::ExitedWithCode(0), "early_exit.*40 thread\\(s\\).*wait at __syncthreads\\(\\) at .*kernel_tests.cu:[0-9]+ that 24 thread\\(s\\).*exited without reaching");
}

TEST_F(EmuKernelFaults, TwoDifferentBarriers) {
  EXPECT_EXIT(
      {
        Dev<int32_t> dy(32);
        SYNK_LAUNCH(two_barriers, 1, 32, 0, nullptr)(dy.p);
        expect_launch_failure(cudaErrorLaunchFailure);
      },
      ::testing::ExitedWithCode(0), "two_barriers.*two different __syncthreads\\(\\): .*kernel_tests.cu:[0-9]+ .* and .*kernel_tests.cu:[0-9]+");
}

TEST_F(EmuKernelFaults, HostPointerIsAnIllegalAddress) {
  EXPECT_EXIT(
      {
        int32_t host[1];
        SYNK_LAUNCH(touch, 1, 1, 0, nullptr)(host);
        expect_launch_failure(cudaErrorIllegalAddress);
      },
      ::testing::ExitedWithCode(0), "touch.*pointer parameter #1 .* is not emulated device memory");
}

// Not a check: the times of a 1M-element elementwise kernel and of the
// reduction (printed; CI runs whole epochs under the emulation, so they
// matter). No timed assertions.
TEST(EmuKernels, Timings) {
  using Clock = std::chrono::steady_clock;
  const int64_t n = 1 << 20;
  Dev<float> a(n), b(n), o(n);
  CHECK_CUDA(cudaMemset(a.p, 0, n * 4));
  CHECK_CUDA(cudaMemset(b.p, 0, n * 4));
  auto ms = [](Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); };
  auto time = [&](const char* what, auto&& run) {
    run();  // first launch: detection, stacks
    CHECK_CUDA(cudaDeviceSynchronize());
    const int reps = 5;
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) run();
    CHECK_CUDA(cudaDeviceSynchronize());
    std::printf("%-44s %8.2f ms\n", what, ms(t0) / reps);
  };
  synk::plan::Strided g{};
  g.nd = 1;
  g.dim[0] = n;
  g.sa[0] = g.sb[0] = g.so[0] = 1;
  g.numel = n;
  time("binary_f32 add, 1M elements", [&] { synk::kernels::binary_f32(synk::plan::BinOp::Add, g, a.p, b.p, o.p, nullptr); });
  time("scale_add, 1M elements", [&] { synk::kernels::scale_add(n, 0.5f, a.p, o.p, true, nullptr); });
  time("unary_f32 exp, 1M elements", [&] { synk::kernels::unary_f32(synk::plan::UnOp::Exp, n, a.p, o.p, 0.f, 0.f, nullptr); });
  synk::plan::Reduce all{};  // sum of 1M elements: one block of 256 threads
  all.nr = 1;
  all.rdim[0] = n;
  all.rstride[0] = 1;
  all.r_count = n;
  all.out_numel = 1;
  time("reduce_f32 sum, 1M -> 1", [&] { synk::kernels::reduce_f32(synk::plan::ReduceKind::Sum, all, 1.f, a.p, o.p, nullptr); });
  synk::plan::Reduce rows{};  // [1024, 1024] over axis 1: 1024 blocks of 256
  rows.nk = 1;
  rows.kdim[0] = 1024;
  rows.kstride[0] = 1024;
  rows.nr = 1;
  rows.rdim[0] = 1024;
  rows.rstride[0] = 1;
  rows.r_count = 1024;
  rows.out_numel = 1024;
  time("reduce_f32 sum, [1024,1024] -> [1024]", [&] { synk::kernels::reduce_f32(synk::plan::ReduceKind::Sum, rows, 1.f, a.p, o.p, nullptr); });
  synk::plan::Reduce cols{};  // [500, 800] over axis 0 (a bias gradient): 800 blocks of 256
  cols.nk = 1;
  cols.kdim[0] = 800;
  cols.kstride[0] = 1;
  cols.nr = 1;
  cols.rdim[0] = 500;
  cols.rstride[0] = 800;
  cols.r_count = 500;
  cols.out_numel = 800;
  time("reduce_f32 sum, [500,800] -> [800]", [&] { synk::kernels::reduce_f32(synk::plan::ReduceKind::Sum, cols, 1.f, a.p, o.p, nullptr); });
}

}  // namespace
