// exec/common.hpp — what every executor (CPU Session, CudaSession) does
// the same way, so rules, messages and initial values agree on every device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "exec/plan/plan.hpp"
#include "synk/array.hpp"
#include "synk/error.hpp"
#include "synk/graph.hpp"

namespace synk::exec {

// Checks count, dtype, rank, concrete dims and data pointers of `inputs`
// against `def`'s input nodes, and that every batch dim has one value.
// Returns that batch size, or -1 when no input has a batch dim. Throws
// ArgumentError / ShapeError naming the function and the input.
int64_t check_inputs(const std::vector<Node>& nodes, const FunctionDef& def, const std::vector<ArrayView>& inputs);

// Checks that every tensor of `spec` (inputs, outputs, updates) belongs to
// `g`, the session's graph (ArgumentError naming the function).
void check_spec_graph(const FunctionSpec& spec, const Graph& g);

// The initial value of variable node `id` on the host (synk::initial_value
// from `seed`). Throws ShapeError if its shape holds the batch dim.
Array initial_array(const Node& var, int32_t id, uint64_t seed);

// "function 'name'": how every executor message names its function.
std::string fn_label(const FunctionDef& def);

// Where a plan's values live for this call, per ValueLoc kind: the arena
// base, a pointer per input position (input(i)), the variables' storage by
// node id, the plan's constants (one 4-byte word per element, on the
// executor's device) and the caller's output buffers (Loc::Output; may be
// null where a plan has none).
template <class InputPtr>
struct BindTo {
  uint8_t* arena;
  InputPtr input;  // (int32_t index) -> void*
  void* const* vars;
  uint32_t* consts;
  void* const* outputs;
};

// Sets p.ptr for every bound value of `p` (Plan::bound) from `to`: the one
// binding both executors use before they run a plan. Inline: it runs on
// every call.
template <class InputPtr>
inline void bind_pointers(plan::Plan& p, const BindTo<InputPtr>& to) {
  for (int32_t id : p.bound) {
    const plan::ValueLoc& l = p.loc[static_cast<size_t>(id)];
    void* ptr = nullptr;
    switch (l.kind) {
      case plan::Loc::Arena: ptr = to.arena + l.offset; break;
      case plan::Loc::Input: ptr = to.input(l.index); break;
      case plan::Loc::Variable: ptr = to.vars[l.index]; break;
      case plan::Loc::Const: ptr = to.consts + l.index; break;
      case plan::Loc::Output: ptr = to.outputs ? to.outputs[l.index] : nullptr; break;
      case plan::Loc::None: break;
    }
    p.ptr[static_cast<size_t>(id)] = ptr;
  }
}

// What an embedding step says of an index outside its table (the CPU
// executor's error and the CUDA executor's, checked before or after the
// call): "index 7 at position 2 is outside [0, 5) (the table's 5 rows)".
inline std::string bad_index_message(int32_t index, int64_t position, int64_t rows) {
  return "index " + std::to_string(index) + " at position " + std::to_string(position) + " is outside [0, " +
         std::to_string(rows) + ") (the table's " + std::to_string(rows) + " rows)";
}

// The exception ladder of a failed step: rethrows `e` with "function
// 'name': op (node id)<where>: " prepended, keeping its type (ArgumentError,
// ShapeError, TypeError, BackendError, else Error). where: "" on the CPU,
// " on the GPU" on the CUDA executor. Call it inside the catch block.
[[noreturn]] void rethrow_in_step(const Error& e, const std::string* function, const plan::Step& s,
                                  const char* where);

}  // namespace synk::exec
