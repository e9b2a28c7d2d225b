// Internal helpers shared by ops.cpp and autodiff: raw node construction and
// the broadcasting rule, without the user-facing argument checks.
#pragma once

#include <vector>

#include "synk/graph.hpp"

namespace synk {

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
Tensor make_node(Graph& g, Op op, DType dt, Shape shape, std::vector<int32_t> inputs,
                 std::vector<int64_t> ints = {}, std::vector<float> floats = {}, bool flag = false);
// g * (y > 0), for the ReLU gradient.
Tensor relu_grad(Tensor y, Tensor g);

}  // namespace synk
