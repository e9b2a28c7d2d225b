// exec/plan/geometry.hpp — the planner's geometry builders: from resolved
// shapes to the iteration structs of kernels/kernel_types.hpp.
#pragma once

#include <cstdint>
#include <vector>

#include "kernel_types.hpp"  // kernels/
#include "synk/graph.hpp"

namespace synk::plan {

// Builds the broadcast iteration of operands a, b and c (numpy rules, right
// aligned) to the output shape `out`. Pass b = nullptr for one operand, c =
// nullptr for at most two (c: the third operand of where).
// Throws ShapeError if more than kMaxDims dims remain after collapsing
// (never for an empty output: it has nothing to iterate over).
Strided make_broadcast(const Shape& out, const Shape& a, const Shape* b, const Shape* c = nullptr);

// Transpose as a strided gather: output dims in order, input strides permuted.
Strided make_transpose(const Shape& in, const std::vector<int64_t>& perm);

// Reduction of `in` over `axes` (both views of types.hpp filled).
Reduce make_reduce(const Shape& in, const std::vector<int64_t>& axes);

// [outer, n, inner] view of `in` around `axis`.
AxisGeom make_axis(const Shape& in, int64_t axis);

// The batched product of a (op(A) [.., m, k]) and b (op(B) [.., k, n]) into
// out [.., m, n]: the batch dims of a and b broadcast (numpy rules), and
// out's are that broadcast or one it sums down to. Throws ShapeError on
// shapes that do not fit, or more than kMaxDims batch dims after collapsing.
BatchGeom make_batch_matmul(const Shape& a, const Shape& b, const Shape& out, bool ta, bool tb);

// Attention over q, k, v (Op::Attention's ints[0] layout) into out; with
// dy (the output's gradient), AttentionGrad's giving the gradient `which`
// (0 q, 1 k, 2 v, 3 all three stacked as [3, ...]). Throws ShapeError on
// shapes that do not fit (a corrupt or hand-made graph; the op's builder
// refuses them first).
AttnGeom make_attention(const Shape& q, const Shape& k, const Shape& v, const Shape* dy, const Shape& out,
                        int64_t layout, int64_t which, float scale);

// How many dims make_broadcast / make_transpose / make_reduce would keep
// after collapsing (concrete shapes). Which dims merge depends only on which
// dims are 1 and which broadcast or are reduced, not on the sizes of the
// others, so a shape with `batch` resolved to 2 gives the count of every
// batch size but 1 (where that dim drops out and the count can only fall).
int broadcast_dims(const Shape& out, const Shape& a, const Shape* b, const Shape* c = nullptr);
int transpose_dims(const Shape& in, const std::vector<int64_t>& perm);
int reduce_dims(const Shape& in, const std::vector<int64_t>& axes);
// make_batch_matmul's batch dims after collapsing, from the batch shapes
// alone (full: the broadcast of a's and b's; out: the node's).
int batch_matmul_dims(const Shape& full, const Shape& a, const Shape& b, const Shape& out);

}  // namespace synk::plan
