// kernels/reduce.cu — reductions (sum/mean/max over any axes), argmax,
// softmax/log-softmax and the fused softmax cross-entropy and its gradient.
//
// Reductions run one block per output element (grid-stride over outputs),
// threads striding over the reduced elements, then a shared-memory tree;
// f32 sums accumulate in double so long sums stay as accurate as the CPU's.
// Row-wise ops (argmax, softmax, cross-entropy) use one thread per row:
// rows are short in the graphs synk runs (class counts), and the formulas
// then match the CPU reference (src/exec/cpu/kernels_reduce.cpp) step for
// step.
#include <cstdint>
#include <type_traits>

#include "launch.cuh"
#include "ops.cuh"

namespace synk::kernels {
namespace {

__device__ inline float f32_inf() { return __int_as_float(0x7f800000); }
__device__ inline float f32_nan() { return __int_as_float(0x7fc00000); }

__device__ inline int64_t kept_offset(const Reduce& g, int64_t o) {
  int64_t off = 0;
  for (int d = g.nk - 1; d >= 0; --d) {
    off += (o % g.kdim[d]) * g.kstride[d];
    o /= g.kdim[d];
  }
  return off;
}

__device__ inline int64_t reduced_offset(const Reduce& g, int64_t r) {
  if (g.nr == 1) return r * g.rstride[0];
  int64_t off = 0;
  for (int d = g.nr - 1; d >= 0; --d) {
    off += (r % g.rdim[d]) * g.rstride[d];
    r /= g.rdim[d];
  }
  return off;
}

// Accumulator policies: init, combine, and the value written for an output.
struct SumF32 {
  using T = float;
  using Acc = double;
  __device__ static Acc init() { return 0.0; }
  __device__ static Acc load(float v) { return static_cast<double>(v); }
  __device__ static Acc comb(Acc a, Acc b) { return a + b; }
};
struct MaxF32 {
  using T = float;
  using Acc = float;
  __device__ static Acc init() { return -f32_inf(); }
  __device__ static Acc load(float v) { return v; }
  __device__ static Acc comb(Acc a, Acc b) { return b > a ? b : a; }
};
struct SumI32 {
  using T = int32_t;
  using Acc = uint32_t;  // wrapping, as on the CPU
  __device__ static Acc init() { return 0u; }
  __device__ static Acc load(int32_t v) { return static_cast<uint32_t>(v); }
  __device__ static Acc comb(Acc a, Acc b) { return a + b; }
};
struct MaxI32 {
  using T = int32_t;
  using Acc = int32_t;
  __device__ static Acc init() { return INT32_MIN; }
  __device__ static Acc load(int32_t v) { return v; }
  __device__ static Acc comb(Acc a, Acc b) { return b > a ? b : a; }
};

constexpr int kRedThreads = 256;

// mean: 0 none; f32: multiply by inv (NaN when nothing is reduced);
// i32: divide by the reduced count.
template <class R>
__global__ void reduce_kernel(Reduce g, const typename R::T* x, typename R::T* y, bool mean, float inv) {
  using Acc = typename R::Acc;
  __shared__ Acc buf[kRedThreads];
  const int tid = threadIdx.x;
  for (int64_t o = blockIdx.x; o < g.out_numel; o += gridDim.x) {
    const typename R::T* xo = x + kept_offset(g, o);
    Acc acc = R::init();
    for (int64_t r = tid; r < g.r_count; r += blockDim.x) acc = R::comb(acc, R::load(xo[reduced_offset(g, r)]));
    buf[tid] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (tid < s) buf[tid] = R::comb(buf[tid], buf[tid + s]);
      __syncthreads();
    }
    if (tid == 0) {
      if constexpr (std::is_same_v<typename R::T, float>) {
        float v = static_cast<float>(buf[0]);
        if (mean) v = g.r_count == 0 ? f32_nan() : v * inv;
        y[o] = v;
      } else {
        int32_t v = static_cast<int32_t>(buf[0]);
        if (mean) v = g.r_count == 0 ? 0 : static_cast<int32_t>(v / g.r_count);
        y[o] = v;
      }
    }
    __syncthreads();  // buf is reused by the next output
  }
}

template <class R>
void launch_reduce(const Reduce& g, const typename R::T* x, typename R::T* y, bool mean, float inv,
                   cudaStream_t stream) {
  if (g.out_numel <= 0) return;
  int threads = 32;
  while (threads < kRedThreads && threads < g.r_count) threads *= 2;
  const int blocks = static_cast<int>(g.out_numel < (int64_t{1} << 20) ? g.out_numel : (int64_t{1} << 20));
  SYNK_LAUNCH(reduce_kernel<R>, blocks, threads, 0, stream)(g, x, y, mean, inv);
}

template <class T>
__global__ void argmax_kernel(AxisGeom g, const T* x, int32_t* y) {
  SYNK_GRID_LOOP(row, g.outer * g.inner) {
    const int64_t o = row / g.inner, j = row % g.inner;
    const T* r = x + o * g.n * g.inner + j;
    int64_t best = 0;
    if (g.n > 0) {
      T bv = r[0];
      for (int64_t k = 1; k < g.n; ++k)
        if (r[k * g.inner] > bv) {
          bv = r[k * g.inner];
          best = k;
        }
    }
    y[row] = static_cast<int32_t>(best);
  }
}

__global__ void softmax_kernel(AxisGeom g, const float* x, float* y, bool log) {
  SYNK_GRID_LOOP(row, g.outer * g.inner) {
    const int64_t o = row / g.inner, j = row % g.inner, st = g.inner;
    const float* r = x + o * g.n * g.inner + j;
    float* q = y + o * g.n * g.inner + j;
    float m = -f32_inf();
    for (int64_t k = 0; k < g.n; ++k) m = r[k * st] > m ? r[k * st] : m;
    float s = 0.f;
    for (int64_t k = 0; k < g.n; ++k) s += expf(r[k * st] - m);
    if (log) {
      const float lse = m + logf(s);
      for (int64_t k = 0; k < g.n; ++k) q[k * st] = r[k * st] - lse;
    } else {
      const float inv = 1.f / s;
      for (int64_t k = 0; k < g.n; ++k) q[k * st] = expf(r[k * st] - m) * inv;
    }
  }
}

__device__ inline float row_max(const float* r, int64_t c) {
  float m = -f32_inf();
  for (int64_t k = 0; k < c; ++k) m = r[k] > m ? r[k] : m;
  return m;
}

__global__ void xent_kernel(int64_t n, int64_t c, const float* logits, const int32_t* labels, float* loss,
                            unsigned long long* bad_row) {
  SYNK_GRID_LOOP(i, n) {
    const int32_t lab = labels[i];
    if (lab < 0 || lab >= c) {
      atomicMin(bad_row, static_cast<unsigned long long>(i));
      loss[i] = f32_nan();
      continue;
    }
    const float* r = logits + i * c;
    const float m = row_max(r, c);
    float s = 0.f;
    for (int64_t k = 0; k < c; ++k) s += expf(r[k] - m);
    loss[i] = m + logf(s) - r[lab];
  }
}

__global__ void xent_grad_kernel(int64_t n, int64_t c, const float* logits, const int32_t* labels,
                                 const float* g, float* dx, unsigned long long* bad_row) {
  SYNK_GRID_LOOP(i, n) {
    const int32_t lab = labels[i];
    float* q = dx + i * c;
    if (lab < 0 || lab >= c) {
      atomicMin(bad_row, static_cast<unsigned long long>(i));
      for (int64_t k = 0; k < c; ++k) q[k] = f32_nan();
      continue;
    }
    const float* r = logits + i * c;
    const float m = row_max(r, c);
    float s = 0.f;
    for (int64_t k = 0; k < c; ++k) {
      q[k] = expf(r[k] - m);
      s += q[k];
    }
    const float scale = g[i] / s;
    for (int64_t k = 0; k < c; ++k) q[k] *= scale;
    q[lab] -= g[i];
  }
}

}  // namespace

void reduce_f32(ReduceKind op, const Reduce& g, float inv, const float* x, float* y, cudaStream_t stream) {
  if (op == ReduceKind::Max) launch_reduce<MaxF32>(g, x, y, false, 1.f, stream);
  else launch_reduce<SumF32>(g, x, y, op == ReduceKind::Mean, inv, stream);
}

void reduce_i32(ReduceKind op, const Reduce& g, const int32_t* x, int32_t* y, cudaStream_t stream) {
  if (op == ReduceKind::Max) launch_reduce<MaxI32>(g, x, y, false, 1.f, stream);
  else launch_reduce<SumI32>(g, x, y, op == ReduceKind::Mean, 1.f, stream);
}

void argmax_f32(const AxisGeom& g, const float* x, int32_t* y, cudaStream_t stream) {
  const int64_t rows = g.outer * g.inner;
  if (rows <= 0) return;
  SYNK_LAUNCH(argmax_kernel<float>, grid_for(rows), kThreads, 0, stream)(g, x, y);
}

void argmax_i32(const AxisGeom& g, const int32_t* x, int32_t* y, cudaStream_t stream) {
  const int64_t rows = g.outer * g.inner;
  if (rows <= 0) return;
  SYNK_LAUNCH(argmax_kernel<int32_t>, grid_for(rows), kThreads, 0, stream)(g, x, y);
}

void softmax(const AxisGeom& g, const float* x, float* y, bool log, cudaStream_t stream) {
  const int64_t rows = g.outer * g.inner;
  if (rows <= 0 || g.n <= 0) return;
  SYNK_LAUNCH(softmax_kernel, grid_for(rows), kThreads, 0, stream)(g, x, y, log);
}

void softmax_xent(int64_t n, int64_t c, const float* logits, const int32_t* labels, float* loss,
                  unsigned long long* bad_row, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(xent_kernel, grid_for(n), kThreads, 0, stream)(n, c, logits, labels, loss, bad_row);
}

void softmax_xent_grad(int64_t n, int64_t c, const float* logits, const int32_t* labels, const float* g,
                       float* dx, unsigned long long* bad_row, cudaStream_t stream) {
  if (n <= 0) return;
  SYNK_LAUNCH(xent_grad_kernel, grid_for(n), kThreads, 0, stream)(n, c, logits, labels, g, dx, bad_row);
}

}  // namespace synk::kernels
