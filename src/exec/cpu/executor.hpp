// exec/cpu/executor.hpp — the CPU executor: runs a compiled plan
// (exec/plan/plan.hpp) step by step with the kernels of exec/cpu/kernels.hpp.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "exec/plan/plan.hpp"
#include "synk/array.hpp"
#include "synk/session.hpp"  // RankSumFn

namespace synk::cpu {

// Process-wide switch for the CPU-only elementwise fusion (tests; the
// environment variable SYNK_CPU_NO_FUSE=1 or SYNK_CPU_NO_REUSE=1 turns it off).
bool& cpu_fuse_elementwise();
// What the CPU Session compiles with: plan::default_compile_options(), plus
// fuse_elementwise when both `fuse` and cpu_fuse_elementwise() are on.
plan::CompileOptions cpu_session_options();

struct RunContext {
  const std::string* function = nullptr;  // for error messages
  uint64_t seed = 0;
  int rank = 0;
  uint64_t call = 0;                      // dropout counter
  const RankSumFn* rank_sum = nullptr;    // rank_sum steps (SessionOptions); null or empty: one rank
};

// Runs the steps of a compiled plan. `inputs` in FunctionDef order;
// `var_ptr` is indexed by node id; `outputs` (by output position) are the
// caller's buffers for Loc::Output values (null if the plan has none).
// Does not copy outputs or apply update copies. after_step (optional) is
// called with each step's index once the step is done.
void execute(plan::Plan& p, const std::vector<Node>& nodes, uint8_t* arena,
             const std::vector<ArrayView>& inputs, void* const* var_ptr, const RunContext& ctx,
             void* const* outputs = nullptr, const std::function<void(size_t)>* after_step = nullptr);

// For each output k computed in place into the caller's buffer: the index of
// the last step that writes or reads it (once that step is done, no later
// step touches the buffer, so the caller may use it while the rest runs);
// -1 for outputs that are copied into the caller's buffer after the run.
std::vector<int64_t> output_ready_steps(const plan::Plan& p);

}  // namespace synk::cpu
