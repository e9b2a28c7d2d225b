// exec/cpu/plan.hpp — a function compiled for one batch size: a flat
// schedule of kernel steps with every shape resolved and every buffer placed
// in one arena, plus the executor that runs it.
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
#include <string>
#include <vector>

#include "exec/cpu/kernels.hpp"
#include "synk/array.hpp"
#include "synk/graph.hpp"

namespace synk::cpu {

// Planner switches; tests turn reuse off to check that sharing buffers does
// not change results.
struct CompileOptions {
  bool reuse = true;           // liveness-based sharing of arena blocks
  bool inplace_updates = true; // write update values straight into variables
  bool fuse = true;            // bias add (+ ReLU) folded into conv/matmul
  // The switches below make steps or locations that only the CPU executor
  // runs (the CUDA executor reuses these plans), so they default to off and
  // Session turns them on (cpu_session_options).
  bool fuse_elementwise = false;  // chains of elementwise ops as one step (Step::fused)
  bool outputs_external = false;  // outputs computed straight into caller buffers (Loc::Output)
};
// Process-wide defaults used by Session and CudaSession (read when a plan is
// compiled). The environment variable SYNK_CPU_NO_REUSE=1 turns all switches off.
CompileOptions& default_compile_options();
// Process-wide switch for the CPU-only elementwise fusion (tests; the
// environment variable SYNK_CPU_NO_FUSE=1 or SYNK_CPU_NO_REUSE=1 turns it off).
bool& cpu_fuse_elementwise();
// What the CPU Session compiles with: default_compile_options(), plus
// fuse_elementwise when both `fuse` and cpu_fuse_elementwise() are on.
CompileOptions cpu_session_options();

// Output: a function output computed in place in the caller's buffer
// (index = output position); only with CompileOptions::outputs_external.
enum class Loc : uint8_t { None, Arena, Input, Variable, Const, Output };
struct ValueLoc {
  Loc kind = Loc::None;
  int32_t index = -1;   // input position, variable node id or const slot
  int64_t offset = 0;   // arena byte offset
};

struct Step {
  Op op = Op::Constant;
  int32_t node = -1;
  int32_t in[3] = {-1, -1, -1};
  DType dtype = DType::f32;     // output
  DType in_dtype = DType::f32;  // first input
  int64_t n = 0;                // output elements
  float f = 0.f;
  int64_t stream = 0;
  BinOp bop = BinOp::Add;
  UnOp uop = UnOp::Neg;
  RedOp rop = RedOp::Sum;
  bool ta = false, tb = false;
  // Fused epilogue of Conv2d/MatMul: + bias (node id in in[2], one value per
  // output channel/column), then ReLU.
  bool relu = false;
  int32_t fused = -1;  // >= 0: a fused elementwise group, Plan::fused[fused]
  int64_t mm_m = 0, mm_n = 0, mm_k = 0;
  Strided st;
  Reduce red;
  AxisGeom ax;
  ConvGeom conv{};
  PoolGeom pool{};
};

struct Plan {
  int64_t batch = 0;
  std::vector<Shape> shapes;    // resolved, per node id (needed nodes only)
  std::vector<ValueLoc> loc;    // per node id; aliases carry their root's place
  std::vector<int32_t> bound;   // node ids whose pointer is bound per call
  std::vector<Step> steps;
  std::vector<EwProgram> fused;
  std::vector<uint32_t> consts;
  int64_t arena_bytes = 0;      // blocks + workspace
  int64_t work_offset = 0;      // conv workspace, at the end of the arena
  std::vector<int32_t> outputs;
  struct UpdateCopy {
    int32_t var, value;
  };
  std::vector<UpdateCopy> copies;  // updates not written in place
  std::vector<void*> ptr;          // per node id, bound per call
};

// Compiles `def` over `nodes` for batch size `batch` (-1 when no input has a
// batch dim). Throws ShapeError/ArgumentError naming the function and node.
Plan compile(const std::vector<Node>& nodes, const FunctionDef& def, int64_t batch,
             const CompileOptions& opts);

struct RunContext {
  const std::string* function = nullptr;  // for error messages
  uint64_t seed = 0;
  int rank = 0;
  uint64_t call = 0;                      // dropout counter
};

// Runs the steps of a compiled plan. `inputs` in FunctionDef order;
// `var_ptr` is indexed by node id; `outputs` (by output position) are the
// caller's buffers for Loc::Output values (null if the plan has none).
// Does not copy outputs or apply update copies.
void execute(Plan& p, const std::vector<Node>& nodes, uint8_t* arena,
             const std::vector<ArrayView>& inputs, void* const* var_ptr, const RunContext& ctx,
             void* const* outputs = nullptr);

}  // namespace synk::cpu
