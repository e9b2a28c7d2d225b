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
using plan::Strided;
using plan::UnOp;

// ---- elementwise ---------------------------------------------------------------
void binary_f32(BinOp op, const Strided& s, const float* a, const float* b, float* o);
void binary_i32(BinOp op, const Strided& s, const int32_t* a, const int32_t* b, int32_t* o);
// Equal producing i32 0/1 from f32 operands.
void equal_f32(const Strided& s, const float* a, const float* b, int32_t* o);

void unary_f32(UnOp op, int64_t n, const float* x, float* y, float p = 0.f);
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
// Epilogue of a fused op on rows x cols of y: y += bias[row % nb] (one value
// per row, bias may be null), then ReLU if asked.
void bias_relu_rows(int64_t rows, int64_t cols, const float* bias, int64_t nb, bool relu, float* y);
// Same with one bias value per column (matmul + row-broadcast bias).
void bias_relu_cols(int64_t rows, int64_t cols, const float* bias, bool relu, float* y);

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

// The direct stride-1 kernels (conv_direct.cpp) the three above use where
// ConvGeom::direct() holds.
void conv2d_direct(const ConvGeom& g, const float* x, const float* w, float* y, float* work, const float* bias,
                   bool relu);
void conv2d_grad_input_direct(const ConvGeom& g, const float* dy, const float* w, float* dx, float* work);
void conv2d_grad_weight_direct(const ConvGeom& g, const float* x, const float* dy, float* dw, float* work);

void max_pool2d(const PoolGeom& g, const float* x, float* y);
void max_pool2d_grad(const PoolGeom& g, const float* x, const float* dy, float* dx);

}  // namespace synk::cpu
