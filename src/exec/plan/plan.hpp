// exec/plan/plan.hpp — the planner both backends run: a function compiled
// for one batch size into a flat schedule of kernel steps, with every shape
// resolved and every buffer placed in one arena. The CPU executor
// (exec/cpu/executor.hpp) runs a Plan as it is; the CUDA executor
// (exec/cuda/executor.hpp) adds its device layout on top.
//
// Compiling does all the work that depends only on shapes (broadcast and
// reduction geometry, conv/pool geometry, buffer offsets), so a call binds
// pointers, runs the steps and allocates nothing but its outputs.
//
// Buffers are planned by liveness: a value's arena block is freed after its
// last reader runs and reused by later values. Reshape aliases its input;
// function inputs are read in place from the caller's arrays; variables from
// their storage. An update whose value is the last thing computed from its
// variable is written straight into the variable (in place) when no later
// step or output still needs the old value.
#pragma once

#include <cstdint>
#include <vector>

#include "exec/plan/fused.hpp"
#include "exec/plan/geometry.hpp"
#include "kernel_types.hpp"  // kernels/
#include "synk/dtype.hpp"
#include "synk/graph.hpp"

namespace synk::plan {

// Planner switches; tests turn reuse off to check that sharing buffers does
// not change results.
struct CompileOptions {
  bool reuse = true;           // liveness-based sharing of arena blocks
  bool inplace_updates = true; // write update values straight into variables
  bool fuse = true;            // bias add (+ ReLU) folded into conv/matmul
  // The switches below make steps or locations that only the CPU executor
  // runs (the CUDA executor reuses these plans), so they default to off and
  // Session turns them on (cpu::cpu_session_options).
  bool fuse_elementwise = false;  // chains of elementwise ops as one step (Step::fused)
  bool fuse_norm_relu = false;    // a ReLU folded into the batch norm it reads (Step::relu)
  bool fuse_matmul_gelu_grad = false;  // GELU's gradient folded into the product it reads (Step::gelu_grad)
  bool outputs_external = false;  // outputs computed straight into caller buffers (Loc::Output)
};
// Process-wide defaults used by Session and CudaSession (read when a plan is
// compiled). The environment variable SYNK_CPU_NO_REUSE=1 turns all switches off.
CompileOptions& default_compile_options();

// Output: a function output computed in place in the caller's buffer
// (index = output position); only with CompileOptions::outputs_external.
enum class Loc : uint8_t { None, Arena, Input, Variable, Const, Output };
struct ValueLoc {
  Loc kind = Loc::None;
  int32_t index = -1;   // input position, variable node id or const slot
  int64_t offset = 0;   // arena byte offset
};

// Which kernel family runs a step: an elementwise family's kernel takes the
// op kind (Step::bop / Step::uop), so the executors need no case per op;
// ByOp: the op's own kernel (switch on Step::op). Ternary is where's
// family (one formula, no kind): a select over three broadcast operands,
// the condition i32, needs its own loop (a third stride and a mixed dtype),
// and making it out of binary ops would blend the branches arithmetically,
// letting a NaN or infinity of the branch not taken into the result.
enum class Family : uint8_t { ByOp, Binary, Unary, Ternary };

struct Step {
  Op op = Op::Constant;
  Family family = Family::ByOp;
  int32_t node = -1;
  int32_t in[6] = {-1, -1, -1, -1, -1, -1};  // batch norm's gradient takes six
  DType dtype = DType::f32;     // output
  DType in_dtype = DType::f32;  // first input
  int64_t n = 0;                // output elements
  float f = 0.f;   // Pow's exponent, Clip's lower bound, ...
  float f2 = 0.f;  // Clip's upper bound
  int64_t stream = 0;
  BinOp bop = BinOp::Add;
  UnOp uop = UnOp::Neg;
  ReduceKind rop = ReduceKind::Sum;
  bool ta = false, tb = false;
  // Fused epilogue of Conv2d/MatMul/BatchMatMul: + bias (node id in in[2],
  // one value per output channel/column), then ReLU; of BatchNorm: ReLU
  // (CompileOptions::fuse_norm_relu).
  bool relu = false;
  // BatchMatMul: GELU's gradient folded in (CompileOptions::
  // fuse_matmul_gelu_grad): the output is gelu_grad(x, product), x the node
  // in in[3] and the form in bop, applied to each block of rows while it is
  // in cache instead of in a pass of its own over the product.
  bool gelu_grad = false;
  // BatchNormGrad: the statistics are x's batch statistics (Node::flag).
  bool training = false;
  int32_t fused = -1;  // >= 0: a fused elementwise group, Plan::fused[fused]
  int64_t mm_m = 0, mm_n = 0, mm_k = 0;
  Strided st;
  Reduce red;
  AxisGeom ax;  // also the normalisations' [rows, D, 1] and [N, C, spatial]
  ConvGeom conv{};
  PoolGeom pool{};
  SliceGeom slice{};  // Slice, SliceGrad; Concat: the output's axis (begin/end unused)
  BatchGeom bmm{};    // BatchMatMul
  AttnGeom attn{};    // Attention, AttentionGrad
  // AttentionGrad: the gradient it gives, of q (0), k (1), v (2), or all
  // three stacked (3).
  int attn_which = 0;
  // Concat: every operand (in[] holds the first three) and where each
  // starts along the axis (parts.size() + 1 entries, the last the total).
  std::vector<int32_t> parts;
  std::vector<int64_t> part_at;
  // Bytes of the step's output (n elements of dtype).
  size_t out_bytes() const { return static_cast<size_t>(n) * dtype_size(dtype); }
};

struct Plan {
  int64_t batch = 0;
  std::vector<Shape> shapes;    // resolved, per node id (needed nodes only)
  std::vector<DType> dtypes;    // per node id
  std::vector<ValueLoc> loc;    // per node id; aliases carry their root's place
  std::vector<int32_t> bound;   // node ids whose pointer is bound per call
  std::vector<Step> steps;
  std::vector<EwProgram> fused;
  std::vector<uint32_t> consts; // one 4-byte word per constant element (f32 or i32 bits)
  int64_t arena_bytes = 0;      // blocks + workspace
  int64_t work_offset = 0;      // conv workspace, at the end of the arena
  std::vector<int32_t> outputs;
  struct UpdateCopy {
    int32_t var, value;
  };
  std::vector<UpdateCopy> copies;  // updates not written in place
  std::vector<void*> ptr;          // per node id, bound per call

  // The bound pointer of node `id`, null for -1 (an absent operand).
  void* ptr_of(int32_t id) const { return id >= 0 ? ptr[static_cast<size_t>(id)] : nullptr; }
  // Bytes of node `id`'s value at this batch size (its resolved shape and dtype).
  int64_t bytes(int32_t id) const {
    return numel(shapes[static_cast<size_t>(id)]) * static_cast<int64_t>(dtype_size(dtypes[static_cast<size_t>(id)]));
  }
};

// Compiles `def` over `nodes` for batch size `batch` (-1 when no input has a
// batch dim). Throws ShapeError/ArgumentError naming the function and node.
Plan compile(const std::vector<Node>& nodes, const FunctionDef& def, int64_t batch,
             const CompileOptions& opts);

// For each output k: the last step that reads or writes the memory its
// value lives in (its own bytes, shared by its aliases), -1 where no step
// does (an input, a variable, a constant, an empty value). Outputs and
// their aliases live until the end of the plan, so after that step the
// value is final and no later step touches it: a backend may hand it over
// while the rest of the plan runs (Function::call_into with ready).
std::vector<int64_t> output_last_steps(const Plan& p);

// ---- update copies (every backend) -------------------------------------------------
// Updates run after the outputs, as copies of their values into the
// variables. A value that lives in a variable another copy overwrites (a
// swap, say) is staged through the arena before any variable is written.
// stage_updates gives, per copy, its staging offset in the arena (-1: read
// in place), placed from `top` on, each rounded up to `align`; top comes
// back past the last. apply_updates runs the copies after a call through
// copy(dst, src, bytes) in the backend's memory; var_ptr: the variables'
// storage by node id.
std::vector<int64_t> stage_updates(const Plan& q, const std::vector<Node>& nodes, int64_t& top, int64_t align);

inline size_t variable_bytes(const std::vector<Node>& nodes, int32_t var) {
  const Node& n = nodes[static_cast<size_t>(var)];
  return static_cast<size_t>(numel(n.shape)) * dtype_size(n.dtype);
}

template <class Copy>
void apply_updates(const Plan& q, const std::vector<Node>& nodes, const std::vector<int64_t>& stage, uint8_t* arena,
                   void* const* var_ptr, Copy&& copy) {
  for (size_t i = 0; i < q.copies.size(); ++i) {
    const size_t bytes = variable_bytes(nodes, q.copies[i].var);
    if (stage[i] >= 0 && bytes > 0) copy(arena + stage[i], q.ptr[static_cast<size_t>(q.copies[i].value)], bytes);
  }
  for (size_t i = 0; i < q.copies.size(); ++i) {
    const Plan::UpdateCopy& c = q.copies[i];
    const void* src = stage[i] >= 0 ? arena + stage[i] : q.ptr[static_cast<size_t>(c.value)];
    void* dst = var_ptr[static_cast<size_t>(c.var)];
    const size_t bytes = variable_bytes(nodes, c.var);
    if (bytes > 0 && src != dst) copy(dst, src, bytes);
  }
}

}  // namespace synk::plan
