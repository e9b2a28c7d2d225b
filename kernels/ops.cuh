// kernels/ops.cuh — launchers for the CUDA kernels of the graph executor
// (src/exec/cuda): elementwise with broadcasting, reductions, softmax and
// cross-entropy, dropout, convolution helpers (im2col/col2im) and max-pool.
//
// The geometry structs are plain data filled by the host planner from the
// CPU planner's geometry (exec/cpu/kernels.hpp), so the GPU computes exactly
// what the CPU reference computes. Launchers only enqueue on `stream` (no
// synchronisation, no allocation, so they can be captured in a CUDA graph),
// do nothing for zero-size work, and leave error checks to the caller.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace synk::kernels {

inline constexpr int kMaxDims = 8;

// Output-contiguous iteration over `nd` dims with per-operand element strides
// (0 = broadcast). Mirrors cpu::Strided.
struct StridedGeom {
  int nd = 0;
  int64_t dim[kMaxDims] = {};
  int64_t sa[kMaxDims] = {};
  int64_t sb[kMaxDims] = {};
  int64_t numel = 0;
};

// ---- elementwise (kernels/pointwise.cu) ----------------------------------------------
enum class BinaryOp : int { Add = 0, Sub, Mul, Div, Equal, ReluGrad };
void binary_f32(BinaryOp op, const StridedGeom& g, const float* a, const float* b, float* o,
                cudaStream_t stream);
// Wrapping integer arithmetic; x/0 = 0 and INT_MIN/-1 = INT_MIN, as on the CPU.
void binary_i32(BinaryOp op, const StridedGeom& g, const int32_t* a, const int32_t* b, int32_t* o,
                cudaStream_t stream);
void equal_f32(const StridedGeom& g, const float* a, const float* b, int32_t* o, cudaStream_t stream);

enum class UnaryOp : int { Neg = 0, Relu, Tanh, Sigmoid, Exp, Log, Sqrt, Square, Pow };
void unary_f32(UnaryOp op, int64_t n, const float* x, float* y, float p, cudaStream_t stream);
void neg_i32(int64_t n, const int32_t* x, int32_t* y, cudaStream_t stream);
void cast_f32_i32(int64_t n, const float* x, int32_t* y, cudaStream_t stream);  // truncating, saturating
void cast_i32_f32(int64_t n, const int32_t* x, float* y, cudaStream_t stream);

// y[i] = x[strided offset of i] (4-byte elements), times `scale` when
// `scaled` (f32 data only: BroadcastTo's averaging flag).
void strided_copy(const StridedGeom& g, const uint32_t* x, uint32_t* y, bool scaled, float scale,
                  cudaStream_t stream);

// Fused epilogues. bias may be null. cols: y[r, c] += bias[c];
// rows: y[r, c] += bias[r % nb]; then ReLU when relu.
void bias_relu_cols(int64_t rows, int64_t cols, const float* bias, bool relu, float* y, cudaStream_t stream);
void bias_relu_rows(int64_t rows, int64_t cols, const float* bias, int64_t nb, bool relu, float* y,
                    cudaStream_t stream);

// Dropout mask with 0 < p < 1: the CPU's counter-based hash, bit for bit.
// The call number is read from device memory (the session writes it before
// each call, so a replayed CUDA graph draws a new mask each call); key_base
// is the call-independent part of the key (seed, rank, stream), thr and
// scale as computed on the CPU.
void dropout_mask(int64_t n, uint32_t thr, float scale, uint64_t key_base,
                  const unsigned long long* counter, float* y, cudaStream_t stream);

// ---- reductions, softmax (kernels/reduce.cu) -----------------------------------------
// Input dims split into kept dims (their order gives the contiguous output
// index) and reduced dims, each with input strides.
struct ReduceGeom {
  int nk = 0, nr = 0;
  int64_t kdim[kMaxDims] = {}, kstride[kMaxDims] = {};
  int64_t rdim[kMaxDims] = {}, rstride[kMaxDims] = {};
  int64_t out_numel = 0, r_count = 0;
};
enum class ReduceOp : int { Sum = 0, Mean, Max };
// Mean multiplies the sum by `inv` (out/in, as the CPU); an empty mean is NaN.
void reduce_f32(ReduceOp op, const ReduceGeom& g, float inv, const float* x, float* y, cudaStream_t stream);
void reduce_i32(ReduceOp op, const ReduceGeom& g, const int32_t* x, int32_t* y, cudaStream_t stream);

// [outer, n, inner] views along one axis.
struct AxisGeom {
  int64_t outer = 1, n = 1, inner = 1;
};
void argmax_f32(const AxisGeom& g, const float* x, int32_t* y, cudaStream_t stream);
void argmax_i32(const AxisGeom& g, const int32_t* x, int32_t* y, cudaStream_t stream);
void softmax(const AxisGeom& g, const float* x, float* y, bool log, cudaStream_t stream);
// A label outside [0, c) makes that row NaN and lowers *bad_row to its index
// (the host reads it after the call; UINT64_MAX means none).
void softmax_xent(int64_t n, int64_t c, const float* logits, const int32_t* labels, float* loss,
                  unsigned long long* bad_row, cudaStream_t stream);
void softmax_xent_grad(int64_t n, int64_t c, const float* logits, const int32_t* labels, const float* g,
                       float* dx, unsigned long long* bad_row, cudaStream_t stream);

// ---- convolution and pooling (kernels/conv.cu) ---------------------------------------
struct ConvShape {
  int64_t n, c, h, w;      // input
  int64_t o, kh, kw;       // filters
  int64_t sh, sw, ph, pw;  // stride, padding
  int64_t oh, ow;          // output
};
// Column matrices of `count` images starting at x (already offset to the
// first image): element (image i, row k = (c, kh, kw), column p = (oh, ow))
// goes to col[i * stride_i + k * stride_k + p].
void im2col(const ConvShape& g, int64_t count, const float* x, float* col, int64_t stride_i,
            int64_t stride_k, cudaStream_t stream);
// dx of `count` images from their column gradients laid out [count][K][P];
// every dx element is written (gathered, no atomics, deterministic).
void col2im(const ConvShape& g, int64_t count, const float* col, float* dx, cudaStream_t stream);
// [count][o][p] -> [o][count][p]
void pack_channels(int64_t count, int64_t o, int64_t p, const float* x, float* y, cudaStream_t stream);

struct PoolShape {
  int64_t n, c, h, w;
  int64_t kh, kw, sh, sw, ph, pw;
  int64_t oh, ow;
};
void max_pool2d(const PoolShape& g, const float* x, float* y, cudaStream_t stream);
// Each input element gathers the gradients of the windows whose first
// maximum it is (window order as the CPU), so no atomics and no zeroing.
void max_pool2d_grad(const PoolShape& g, const float* x, const float* dy, float* dx, cudaStream_t stream);

}  // namespace synk::kernels
