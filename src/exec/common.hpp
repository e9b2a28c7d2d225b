// exec/common.hpp — what every executor (CPU Session, CudaSession) does
// the same way, so rules, messages and initial values agree on every device.
#pragma once

#include <cstdint>
#include <vector>

#include "synk/array.hpp"
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

}  // namespace synk::exec
