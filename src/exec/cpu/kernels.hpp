// exec/cpu/kernels.hpp — the CPU kernels of the executor: plain functions on
// raw pointers and the planner's geometry (kernels/kernel_types.hpp), so the
// compiled plan does all shape work once and a call only runs loops.
//
// Every kernel handles zero-size tensors. The geometry structs are filled by
// the planner (exec/plan) from resolved node shapes; kernels trust them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "exec/plan/fused.hpp"
#include "kernel_types.hpp"  // kernels/

namespace synk::cpu {

// The kernels take the planner's types as they are.
using plan::AxisGeom;
using plan::AttnGeom;
using plan::BatchGeom;
using plan::BinOp;
using plan::ConvGeom;
using plan::EwArg;
using plan::EwInstr;
using plan::EwOp;
using plan::EwProgram;
using plan::kEwMaxInputs;
using plan::kEwMaxKeys;
using plan::kEwMaxOutputs;
using plan::kEwMaxRegs;
using plan::kMaxDims;
using plan::PoolGeom;
using plan::Reduce;
using plan::ReduceKind;
using plan::SliceGeom;
using plan::Strided;
using plan::UnOp;

// ---- elementwise ---------------------------------------------------------------
void binary_f32(BinOp op, const Strided& s, const float* a, const float* b, float* o);
// Kinds with an i32 form only (ew::binary_has_i32; the planner refuses the others).
void binary_i32(BinOp op, const Strided& s, const int32_t* a, const int32_t* b, int32_t* o);
// A comparison (Equal, Greater, Less) producing i32 0/1 from f32 operands.
void compare_f32(BinOp op, const Strided& s, const float* a, const float* b, int32_t* o);
// where: o = c != 0 ? a : b, the three operands broadcast by s (sa: c,
// sb: a, sc: b).
void where_f32(const Strided& s, const int32_t* c, const float* a, const float* b, float* o);
void where_i32(const Strided& s, const int32_t* c, const int32_t* a, const int32_t* b, int32_t* o);

// p, q: the op's scalar attributes (Pow's exponent; Clip's bounds).
void unary_f32(UnOp op, int64_t n, const float* x, float* y, float p = 0.f, float q = 0.f);
// GELU (op Gelu or GeluTanh) over n contiguous floats, and its gradient
// (GeluGrad or GeluTanhGrad) of x and g, each read with stride sx / sg of 0
// (one value for all) or 1: kernels_gelu.cpp, the only loops that evaluate
// GELU, for unary_f32 / binary_f32 and the fused interpreter alike.
void gelu_loop(UnOp op, int64_t n, const float* x, float* y);
void gelu_grad_loop(BinOp op, int64_t n, const float* x, int64_t sx, const float* g, int64_t sg, float* o);
void neg_i32(int64_t n, const int32_t* x, int32_t* y);
void cast_f32_i32(int64_t n, const float* x, int32_t* y);  // truncates
void cast_i32_f32(int64_t n, const int32_t* x, float* y);

// Copies 4-byte elements through a strided iteration (BroadcastTo,
// Transpose, materialised copies).
void strided_copy(const Strided& s, const uint32_t* x, uint32_t* y);

// Dropout mask: 0 with probability p, else 1/(1-p); counter-based so that
// the mask is a pure function of (key, element index).
void dropout_mask(int64_t n, float p, uint64_t key, float* y);
// Elements [start, start + count) of that mask (fused elementwise groups
// make it chunk by chunk).
void dropout_range(uint64_t key, float p, int64_t start, int64_t count, float* y);
uint64_t dropout_key(uint64_t seed, int rank, int64_t stream, uint64_t call);

// ---- fused elementwise groups ---------------------------------------------------
// Runs a fused program (exec/plan/fused.hpp). in/out: pointers by slot;
// keys: dropout key by key slot. An output may share memory with a
// full-size input (each chunk is read before it is stored).
void fused_elementwise(const EwProgram& p, const float* const* in, float* const* out, const uint64_t* keys);

// ---- reductions -------------------------------------------------------------
void reduce_f32(ReduceKind op, const Reduce& r, const float* x, float* y);
void reduce_i32(ReduceKind op, const Reduce& r, const int32_t* x, int32_t* y);

template <class T> void argmax(const AxisGeom& g, const T* x, int32_t* y);
void softmax(const AxisGeom& g, const float* x, float* y, bool log);
// Returns -1 if every label is in [0, c), else the index of the first bad row.
int64_t softmax_xent(int64_t n, int64_t c, const float* logits, const int32_t* labels, float* loss);
int64_t softmax_xent_grad(int64_t n, int64_t c, const float* logits, const int32_t* labels,
                          const float* g, float* dx);

// ---- linear algebra and nn -------------------------------------------------------
// C[m,n] = op(A) op(B); A is [m,k] (or [k,m] if ta), B is [k,n] (or [n,k]).
void matmul(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
            float* c, float beta = 0.f);
// The batched product of BatchGeom (one GEMM where the batch folds, else
// one sgemm per product; summed outputs zeroed first, then accumulated).
// ep (may be null): GELU's gradient folded in (Step::gelu_grad): c =
// gelu_grad(ep->x, c) with ep->x shaped as c, applied by gemm_small to each
// block of rows while it is in cache, else in a pass after the product.
struct GeluGradEpilogue {
  BinOp op;  // GeluGrad or GeluTanhGrad
  const float* x;
};
void batch_matmul(const BatchGeom& g, const float* a, const float* b, float* c,
                  const GeluGradEpilogue* ep = nullptr);
// C [m, n] = A [m, k] op(B) (B [k, n], or [n, k] when tb), plus bias (one
// value per column) unless null: gemm_small.cpp's kernel for many rows against a small B (n a
// multiple of 16, n * k <= kGemmSmallMaxB, m >= 64, an AVX2 or AVX-512 CPU).
// Returns false, doing nothing, where it does not apply.
inline constexpr int64_t kGemmSmallMaxB = 128 * 256;
bool gemm_small(bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b, const float* bias,
                float* c, const GeluGradEpilogue* ep = nullptr);
// Epilogue of a fused op on rows x cols of y: y += bias[row % nb] (one value
// per row, bias may be null), then ReLU if asked.
void bias_relu_rows(int64_t rows, int64_t cols, const float* bias, int64_t nb, bool relu, float* y);
// Same with one bias value per column (matmul + row-broadcast bias).
void bias_relu_cols(int64_t rows, int64_t cols, const float* bias, bool relu, float* y);
// batch_matmul, then + bias (one value per column) and ReLU if asked: the
// fused epilogue of a dense layer.
void batch_matmul_bias(const BatchGeom& g, const float* a, const float* b, const float* bias, bool relu, float* c);

// ---- shape ops (4-byte elements: f32 or i32) ----------------------------------------
// y [outer, end-begin, inner] = x [outer, n, inner] at [begin, end) (Slice,
// Concat's gradient).
void slice_copy(const SliceGeom& g, const uint32_t* x, uint32_t* y);
// x [outer, end-begin, inner] into y [outer, n, inner] at [begin, end); the
// rest of y zeroed when zero_rest (SliceGrad) or left (Concat's parts).
void slice_place(const SliceGeom& g, const uint32_t* x, uint32_t* y, bool zero_rest);
// y[r, :] = table[idx[r], :] for `rows` indices into a [v, d] table; the
// gradient dt [v, d] = the rows of g added at their indices (zeroed first,
// added in index order). Both check every index first and return the
// position of the first outside [0, v) without writing anything, else -1.
int64_t embedding(int64_t rows, int64_t d, int64_t v, const float* table, const int32_t* idx, float* y);
int64_t embedding_grad(int64_t rows, int64_t d, int64_t v, const float* g, const int32_t* idx, float* dt);

// bias (one value per output channel, may be null) and relu: fused epilogue.
void conv2d(const ConvGeom& g, const float* x, const float* w, float* y, float* work,
            const float* bias = nullptr, bool relu = false);
void conv2d_grad_input(const ConvGeom& g, const float* dy, const float* w, float* dx, float* work);
void conv2d_grad_weight(const ConvGeom& g, const float* x, const float* dy, float* dw, float* work);
// The widest instruction set whose kernel clones run: what the CPU has,
// capped by SYNK_CPU_ISA=avx2 or base (so one machine tests every clone).
// avx512 means AVX-512F with AVX2 and FMA; avx2 means AVX2 with FMA.
enum class Isa { base, avx2, avx512 };
Isa cpu_isa();

// The direct kernels (conv_direct.cpp) the three above use where
// ConvGeom::direct(), direct_gi() and direct_gw() hold.
void conv2d_direct(const ConvGeom& g, const float* x, const float* w, float* y, float* work, const float* bias,
                   bool relu);
void conv2d_grad_input_direct(const ConvGeom& g, const float* dy, const float* w, float* dx, float* work);
void conv2d_grad_weight_direct(const ConvGeom& g, const float* x, const float* dy, float* dw, float* work);

void max_pool2d(const PoolGeom& g, const float* x, float* y);
void max_pool2d_grad(const PoolGeom& g, const float* x, const float* dy, float* dx);

// ---- attention (kernels_attention.cpp) ----------------------------------------------
// o = softmax(q k^T * scale) v per (batch, head) of g; work: g.workspace()
// floats. The gradient gives any of dq, dk, dv that are not null (each
// written whole).
void attention(const AttnGeom& g, const float* q, const float* k, const float* v, float* o, float* work);
void attention_grad(const AttnGeom& g, const float* q, const float* k, const float* v, const float* dy, float* dq,
                    float* dk, float* dv, float* work);

// ---- normalisation and average pooling (kernels_norm.cpp) ---------------------------
// Layer norm over rows g.outer x g.n (g.inner = 1); gamma and beta may be
// null (then y is the normalised x).
void layer_norm(const AxisGeom& g, const float* x, const float* gamma, const float* beta, float eps, float* y);
void layer_norm_grad(const AxisGeom& g, const float* x, const float* gamma, const float* dy, float eps, float* dx);
// Batch norm over x [g.outer = N, g.n = C, g.inner = spatial].
void batch_norm_var(const AxisGeom& g, const float* x, const float* mean, float* var);
// relu: max(y, 0) in the same pass (the planner's fold_norm_relu).
void batch_norm(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* gamma,
                const float* beta, float eps, float* y, bool relu = false);
// sums (training only, may be null): batch_norm_grad_sums' [2, C] of the
// same x and dy, which then are read once instead of twice.
void batch_norm_grad(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* gamma,
                     const float* dy, float eps, bool training, float* dx, const float* sums = nullptr);
// [2, C]: per channel sum(dy) (beta's gradient), then sum(dy * xhat) (gamma's).
void batch_norm_grad_sums(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* dy,
                          float eps, float* out);
// gamma's gradient: per channel, the sum of dy * (x - mean) / sqrt(var + eps).
void batch_norm_grad_gamma(const AxisGeom& g, const float* x, const float* mean, const float* var, const float* dy,
                           float eps, float* out);
void batch_norm_running_var(const AxisGeom& g, const float* running, const float* var, float momentum, float* out);
void avg_pool2d(const PoolGeom& g, const float* x, float* y);
void avg_pool2d_grad(const PoolGeom& g, const float* dy, float* dx);

}  // namespace synk::cpu
