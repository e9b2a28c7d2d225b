// Internal helpers shared by ops.cpp, graph.cpp and autodiff: raw node
// construction and the broadcasting rule, without the user-facing argument
// checks.
#pragma once

#include <cmath>
#include <vector>

#include "synk/graph.hpp"

namespace synk {

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
Tensor make_node(Graph& g, Op op, DType dt, Shape shape, std::vector<int32_t> inputs,
                 std::vector<int64_t> ints = {}, std::vector<float> floats = {}, bool flag = false);
// g * (y > 0), for the ReLU gradient.
Tensor relu_grad(Tensor y, Tensor g);
// The gradient helpers of the elementwise ops (Op::GeluGrad and friends in
// graph.hpp): g * gelu'(x); g * sign(x); x's share of maximum(x, y)'s
// gradient (broadcasting); 1 where lo <= x <= hi.
Tensor gelu_grad(Tensor x, Tensor g, bool tanh_approx);
Tensor abs_grad(Tensor x, Tensor g);
Tensor maximum_grad_mask(Tensor x, Tensor y);
Tensor clip_mask(Tensor x, float lo, float hi);
// The batched product of a and b (operands of at least 2 dims, at least one
// above 2) with its batch dims summed down to `out_batch` (the broadcast of
// the operands' batch dims, or a shape that broadcasts to it): a broadcast
// operand's gradient in one step.
Tensor batch_matmul_to(Tensor a, Tensor b, bool trans_a, bool trans_b, const Shape& out_batch);
// g placed at [begin, end) of `axis` (normalised) in zeros of x_shape.
Tensor slice_grad(Tensor g, const Shape& x_shape, int axis, int64_t begin, int64_t end);
// Scatter-add of g [..., D]'s rows at indices [...] into zeros of table_shape [V, D].
Tensor embedding_grad(Tensor g, Tensor indices, const Shape& table_shape);

// Whether a float is exactly an i32: a whole number in i32's range. A float
// given for an i32 constant (Graph::constant, a scalar operand of an i32
// tensor) must be; anything else would be truncated silently.
inline bool exact_i32(float v) {
  return std::isfinite(v) && v == std::trunc(v) && v >= -2147483648.f && v < 2147483648.f;
}

}  // namespace synk
