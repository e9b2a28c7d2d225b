// exec/cpu/kernels.hpp — the CPU kernels of the executor: plain functions on
// raw pointers and precomputed geometry, so the compiled plan does all shape
// work once and a call only runs loops.
//
// Every kernel handles zero-size tensors. Geometry structs are filled by the
// planner (plan.cpp) from resolved node shapes; kernels trust them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "synk/dtype.hpp"
#include "synk/graph.hpp"

namespace synk::cpu {

// Dims after collapsing (adjacent dims that iterate alike are merged), so
// real graphs rarely need more than 3 or 4. The CUDA kernels share the
// limit; the op constructors (src/graph/ops.cpp) refuse a graph that needs
// more when it is built (broadcast_dims and friends below).
inline constexpr int kMaxDims = 8;

// An output-contiguous iteration over `nd` dims with per-operand strides in
// elements (stride 0 = broadcast along that dim).
struct Strided {
  int nd = 0;
  int64_t dim[kMaxDims] = {};
  int64_t sa[kMaxDims] = {};  // operand a (or the single input)
  int64_t sb[kMaxDims] = {};  // operand b
  int64_t so[kMaxDims] = {};  // output (contiguous)
  int64_t numel = 0;
};

// Builds the broadcast iteration of operands a and b (numpy rules, right
// aligned) to the output shape `out`. Pass b = nullptr for one operand.
// Throws ShapeError if more than kMaxDims dims remain after collapsing
// (never for an empty output: it has nothing to iterate over).
Strided make_broadcast(const Shape& out, const Shape& a, const Shape* b);

// Transpose as a strided gather: output dims in order, input strides permuted.
Strided make_transpose(const Shape& in, const std::vector<int64_t>& perm);

// How many dims make_broadcast / make_transpose / make_reduce would keep
// after collapsing (concrete shapes). Which dims merge depends only on which
// dims are 1 and which broadcast or are reduced, not on the sizes of the
// others, so a shape with `batch` resolved to 2 gives the count of every
// batch size but 1 (where that dim drops out and the count can only fall).
int broadcast_dims(const Shape& out, const Shape& a, const Shape* b);
int transpose_dims(const Shape& in, const std::vector<int64_t>& perm);
int reduce_dims(const Shape& in, const std::vector<int64_t>& axes);

// ---- elementwise ---------------------------------------------------------------
enum class BinOp : uint8_t { Add, Sub, Mul, Div, Equal, ReluGrad };
void binary_f32(BinOp op, const Strided& s, const float* a, const float* b, float* o);
void binary_i32(BinOp op, const Strided& s, const int32_t* a, const int32_t* b, int32_t* o);
// Equal producing i32 0/1 from f32 operands.
void equal_f32(const Strided& s, const float* a, const float* b, int32_t* o);

enum class UnOp : uint8_t { Neg, Relu, Tanh, Sigmoid, Exp, Log, Sqrt, Square, Pow };
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
// A chain of same-size f32 elementwise ops run as one pass: the data goes
// through in chunks small enough for L1, each op a plain loop over a chunk
// "register". Per element, every op computes exactly what its own kernel
// would, in the same order, so results are bit-identical to running the
// ops one by one.
enum class EwOp : uint8_t {
  Add, Sub, Mul, Div, ReluGrad,                                // binary
  Neg, Relu, Tanh, Sigmoid, Exp, Log, Sqrt, Square, Pow,        // unary (f = exponent)
  Dropout,                                                     // mask (f = p, key slot)
};
struct EwArg {
  enum Kind : uint8_t { None, Reg, Full, Scalar } kind = None;
  int16_t index = 0;  // register, or external input slot
};
struct EwInstr {
  EwOp op = EwOp::Add;
  EwArg a, b;
  int16_t dst = 0;    // register
  int16_t key = -1;   // Dropout: slot in the program's dropout streams
  float f = 0.f;
};
struct EwProgram {
  int64_t n = 0;                  // elements of every full-size operand and result
  int nregs = 0;
  std::vector<EwInstr> code;
  std::vector<int32_t> inputs;    // node ids, by input slot
  std::vector<int32_t> outputs;   // node ids stored to memory
  std::vector<int16_t> out_reg;   // register holding each output
  std::vector<int64_t> streams;   // dropout streams, by key slot
  // Programs with a hand-written loop (set by classify).
  enum Pattern : uint8_t { Generic, Nesterov } pattern = Generic;
};
// Recognises the patterns that have their own loop; call once per program.
void classify(EwProgram& p);
inline constexpr int kEwMaxRegs = 12;
inline constexpr int kEwMaxInputs = 32;
inline constexpr int kEwMaxOutputs = 16;
inline constexpr int kEwMaxKeys = 16;
// in/out: pointers by slot; keys: dropout key by key slot. An output may
// share memory with a full-size input (each chunk is read before it is
// stored).
void fused_elementwise(const EwProgram& p, const float* const* in, float* const* out, const uint64_t* keys);

// ---- reductions -------------------------------------------------------------
enum class RedOp : uint8_t { Sum, Mean, Max };
// Reduction geometry: input dims collapsed into alternating kept/reduced runs.
struct Reduce {
  int nd = 0;
  int64_t dim[kMaxDims] = {};
  bool red[kMaxDims] = {};
  int64_t sx[kMaxDims] = {};  // input strides
  int64_t so[kMaxDims] = {};  // output strides (0 on reduced dims)
  int64_t in_numel = 0, out_numel = 0;
};
Reduce make_reduce(const Shape& in, const std::vector<int64_t>& axes);
void reduce_f32(RedOp op, const Reduce& r, const float* x, float* y);
void reduce_i32(RedOp op, const Reduce& r, const int32_t* x, int32_t* y);

// [outer, n, inner] views for ops along one axis.
struct AxisGeom {
  int64_t outer = 1, n = 1, inner = 1;
};
AxisGeom make_axis(const Shape& in, int64_t axis);
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

struct ConvGeom {
  int64_t n, c, h, w;      // input
  int64_t o, kh, kw;       // filters
  int64_t sh, sw, ph, pw;  // stride, padding
  int64_t oh, ow;          // output
  int64_t k() const { return c * kh * kw; }
  int64_t p() const { return oh * ow; }
  // 1x1 / stride 1 / no padding: the input is its own column matrix.
  bool identity_cols() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
  // Floats of workspace the conv kernels need.
  int64_t workspace() const;
};
// bias (one value per output channel, may be null) and relu: fused epilogue.
void conv2d(const ConvGeom& g, const float* x, const float* w, float* y, float* work,
            const float* bias = nullptr, bool relu = false);
void conv2d_grad_input(const ConvGeom& g, const float* dy, const float* w, float* dx, float* work);
void conv2d_grad_weight(const ConvGeom& g, const float* x, const float* dy, float* dw, float* work);

struct PoolGeom {
  int64_t n, c, h, w;
  int64_t kh, kw, sh, sw, ph, pw;
  int64_t oh, ow;
};
void max_pool2d(const PoolGeom& g, const float* x, float* y);
void max_pool2d_grad(const PoolGeom& g, const float* x, const float* dy, float* dx);

}  // namespace synk::cpu
