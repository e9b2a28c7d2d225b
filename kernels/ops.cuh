// kernels/ops.cuh — launchers for the CUDA kernels of the graph executor
// (src/exec/cuda): elementwise with broadcasting (where's select included),
// reductions, softmax and cross-entropy, dropout, fill, convolution helpers
// (im2col/col2im), max-pool, normalisation and average pooling, and the shape
// ops (slice, concat's parts, embedding).
//
// The op kinds and geometry structs are the planner's own
// (kernels/kernel_types.hpp), the very structs the CPU kernels take, so the GPU
// computes exactly what the CPU reference computes. Launchers only enqueue on `stream` (no
// synchronisation, no allocation, so they can be captured in a CUDA graph),
// do nothing for zero-size work, and leave error checks to the caller.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernel_types.hpp"

namespace synk::kernels {

using plan::AttnGeom;
using plan::AxisGeom;
using plan::BinOp;
using plan::ConvGeom;
using plan::kMaxDims;
using plan::PoolGeom;
using plan::Reduce;
using plan::ReduceKind;
using plan::SliceGeom;
using plan::Strided;
using plan::UnOp;

// ---- elementwise (kernels/pointwise.cu) ----------------------------------------------
void binary_f32(BinOp op, const Strided& g, const float* a, const float* b, float* o,
                cudaStream_t stream);
// Wrapping integer arithmetic; x/0 = 0 and INT_MIN/-1 = INT_MIN, as on the
// CPU. Kinds with an i32 form only (ew::binary_has_i32): the others launch
// nothing (the planner refuses them).
void binary_i32(BinOp op, const Strided& g, const int32_t* a, const int32_t* b, int32_t* o,
                cudaStream_t stream);
// A comparison (Equal, Greater, Less) of f32 operands, i32 0/1 result.
void compare_f32(BinOp op, const Strided& g, const float* a, const float* b, int32_t* o, cudaStream_t stream);
// where: o = c != 0 ? a : b over g (sa: c, sb: a, sc: b).
void where_f32(const Strided& g, const int32_t* c, const float* a, const float* b, float* o, cudaStream_t stream);
void where_i32(const Strided& g, const int32_t* c, const int32_t* a, const int32_t* b, int32_t* o,
               cudaStream_t stream);

// p, q: the op's scalar attributes (Pow's exponent; Clip's bounds).
void unary_f32(UnOp op, int64_t n, const float* x, float* y, float p, float q, cudaStream_t stream);
void neg_i32(int64_t n, const int32_t* x, int32_t* y, cudaStream_t stream);
void cast_f32_i32(int64_t n, const float* x, int32_t* y, cudaStream_t stream);  // truncating, saturating
void cast_i32_f32(int64_t n, const int32_t* x, float* y, cudaStream_t stream);

// y[i] = x[strided offset of i] (4-byte elements), times `scale` when
// `scaled` (f32 data only: BroadcastTo's averaging flag).
void strided_copy(const Strided& g, const uint32_t* x, uint32_t* y, bool scaled, float scale,
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
// y[i] = value (dropout with p = 0 or p >= 1).
void fill(int64_t n, float value, float* y, cudaStream_t stream);
// y[i] = w * x[i], or with add y[i] += w * x[i] (x may equal y): the
// runtime's weighted gradients in device memory (Executor::scale_add).
void scale_add(int64_t n, float w, const float* x, float* y, bool add, cudaStream_t stream);

// ---- reductions, softmax (kernels/reduce.cu) -----------------------------------------
// The kernels read the reduction's kept/reduced split (nk, kdim, kstride,
// nr, rdim, rstride, r_count) and out_numel.
// Mean multiplies the sum by `inv` (out/in, as the CPU); an empty mean is NaN.
void reduce_f32(ReduceKind op, const Reduce& g, float inv, const float* x, float* y, cudaStream_t stream);
void reduce_i32(ReduceKind op, const Reduce& g, const int32_t* x, int32_t* y, cudaStream_t stream);

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
// Column matrices of `count` images starting at x (already offset to the
// first image): element (image i, row k = (c, kh, kw), column p = (oh, ow))
// goes to col[i * stride_i + k * stride_k + p].
void im2col(const ConvGeom& g, int64_t count, const float* x, float* col, int64_t stride_i,
            int64_t stride_k, cudaStream_t stream);
// dx of `count` images from their column gradients laid out [count][K][P];
// every dx element is written (gathered, no atomics, deterministic).
void col2im(const ConvGeom& g, int64_t count, const float* col, float* dx, cudaStream_t stream);
// [count][o][p] -> [o][count][p]
void pack_channels(int64_t count, int64_t o, int64_t p, const float* x, float* y, cudaStream_t stream);

void max_pool2d(const PoolGeom& g, const float* x, float* y, cudaStream_t stream);
// Each input element gathers the gradients of the windows whose first
// maximum it is (window order as the CPU), so no atomics and no zeroing.
void max_pool2d_grad(const PoolGeom& g, const float* x, const float* dy, float* dx, cudaStream_t stream);

// ---- shape ops (kernels/shape.cu) ------------------------------------------------------
// As the CPU kernels of the same names (src/exec/cpu/kernels.hpp), on
// 4-byte elements: the part [begin, end) of SliceGeom's axis read out of x
// into y, or written from x into y (zero_rest: every other element of y
// zeroed, SliceGrad; else left, Concat's parts).
void slice_copy(const SliceGeom& g, const uint32_t* x, uint32_t* y, cudaStream_t stream);
void slice_place(const SliceGeom& g, const uint32_t* x, uint32_t* y, bool zero_rest, cudaStream_t stream);
// y[r, :] = table[idx[r], :] for `rows` indices into a [v, d] table, and
// dt[idx[r], :] += g[r, :] with atomics (dt zeroed by the caller). An index
// outside [0, v) reads nothing: its row of y is NaN, it adds nothing, and
// *bad is lowered to shape::bad_index_word(r, index) (the caller reads it
// after the call; shape::kNoBadIndex means none).
void embedding(int64_t rows, int64_t d, int64_t v, const float* table, const int32_t* idx, float* y,
               unsigned long long* bad, cudaStream_t stream);
void embedding_grad_add(int64_t rows, int64_t d, int64_t v, const float* g, const int32_t* idx, float* dt,
                        unsigned long long* bad, cudaStream_t stream);
// ---- attention (kernels/attention.cu) ----------------------------------------------------
// The CPU kernels' signatures (src/exec/cpu/kernels.hpp) with a stream and
// no workspace.
void attention(const AttnGeom& g, const float* q, const float* k, const float* v, float* o, cudaStream_t stream);
void attention_grad(const AttnGeom& g, const float* q, const float* k, const float* v, const float* dy, float* dq,
                    float* dk, float* dv, cudaStream_t stream);
// ---- normalisation and average pooling (kernels/norm.cu) --------------------------------
// The CPU kernels' signatures (src/exec/cpu/kernels.hpp) with a stream.
void layer_norm(const AxisGeom& g, const float* x, const float* gamma, const float* beta, float eps, float* y,
                cudaStream_t stream);
void layer_norm_grad(const AxisGeom& g, const float* x, const float* gamma, const float* dy, float eps, float* dx,
                     cudaStream_t stream);
void batch_norm_var(const AxisGeom& g, const float* x, const float* mean, float* var, cudaStream_t stream);
void batch_norm(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* gamma,
                const float* beta, float eps, float* y, cudaStream_t stream);
void batch_norm_grad(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* gamma,
                     const float* dy, float eps, bool training, float* dx, cudaStream_t stream,
                     const float* sums = nullptr);
void batch_norm_grad_sums(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* dy,
                          float eps, float* out, cudaStream_t stream);
void batch_norm_grad_gamma(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* dy,
                           float eps, float* out, cudaStream_t stream);
void batch_norm_running_var(const AxisGeom& g, const float* running, const float* var, float momentum, float* out,
                            cudaStream_t stream);
void avg_pool2d(const PoolGeom& g, const float* x, float* y, cudaStream_t stream);
void avg_pool2d_grad(const PoolGeom& g, const float* dy, float* dx, cudaStream_t stream);

}  // namespace synk::kernels
