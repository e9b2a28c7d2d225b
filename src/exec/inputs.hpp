// exec/inputs.hpp — checking a call's inputs against its function, shared
// by every executor (CPU Session, CudaSession) so the rules and the
// messages are the same on every device.
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

}  // namespace synk::exec
