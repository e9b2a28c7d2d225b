// synk/ops.hpp — the ops that build graphs.
//
// Each op checks its operands' shapes and dtypes when the graph is built
// and throws ShapeError / TypeError naming the op and the shapes (not later,
// when a function is compiled or called). Binary elementwise ops broadcast
// like numpy; floats mix with tensors as scalar constants.
//
//   auto h = synk::relu(synk::matmul(x, W) + b);        // dense + ReLU
//   auto p = synk::softmax(h);                          // rows sum to 1
//   auto loss = synk::mean(synk::softmax_cross_entropy(h, y));   // y: [batch] i32 labels
//   auto acc = synk::mean(synk::cast(synk::equal(synk::argmax(h, 1), y), synk::f32));
//
// Dtypes. Operands of a binary op have one dtype (cast() converts). i32
// tensors take add, sub, mul, div (truncating), equal, greater, less,
// maximum, minimum, where, neg, sum, max, argmax, cast and the layout ops;
// every other op takes f32 only and
// refuses i32 with a TypeError. A float scalar with an i32 tensor
// (`x * 2.f`) becomes an i32 constant only if it is a whole number in i32's
// range; anything else (`x * 0.5f`, `x + 2.7f`) would be truncated and is a
// TypeError naming the op and the scalar: cast the tensor to f32 first.
//
// Dims. Tensors may have any number of dims, but the elementwise, layout
// and reduction kernels loop over at most 8 after merging adjacent dims that
// iterate alike (dims of size 1 drop out; neighbouring dims merge where both
// operands broadcast alike, where a transpose keeps them adjacent and in
// order, where a reduction reduces or keeps both). An op that would need
// more (e.g. [2,1,2,1,2,1,2,1,2] + [1,2,1,2,1,2,1,2,1], a 9-d reversing
// transpose, a 9-d sum over alternating axes) is refused with a ShapeError
// when it is built; `batch` counts as a size above 1 there. Reshape to fewer
// dims first.
#pragma once

#include <vector>

#include "synk/graph.hpp"

namespace synk {

// Elementwise, numpy broadcasting; operands of one dtype.
Tensor add(Tensor a, Tensor b);
Tensor sub(Tensor a, Tensor b);
Tensor mul(Tensor a, Tensor b);
Tensor div(Tensor a, Tensor b);
Tensor equal(Tensor a, Tensor b);  // -> i32 0/1

// Comparisons, -> i32 0/1 like equal (masks for where): a > b, a < b.
// NaN compares false. A float operand becomes a constant of the other's
// dtype (as with operator+).
Tensor greater(Tensor a, Tensor b);
Tensor greater(Tensor a, float b);
Tensor greater(float a, Tensor b);
Tensor less(Tensor a, Tensor b);
Tensor less(Tensor a, float b);
Tensor less(float a, Tensor b);

// Elementwise maximum / minimum (PyTorch's torch.maximum / torch.minimum):
// numpy broadcasting, f32 or i32; a NaN operand gives NaN. Gradient as
// PyTorch: all of g to the larger (smaller) operand, half to each on a tie.
Tensor maximum(Tensor a, Tensor b);
Tensor maximum(Tensor a, float b);
Tensor maximum(float a, Tensor b);
Tensor minimum(Tensor a, Tensor b);
Tensor minimum(Tensor a, float b);
Tensor minimum(float a, Tensor b);

// where(cond, a, b): a where cond != 0, else b (torch.where). cond is i32
// (greater, less, equal make one); a and b have one dtype, f32 or i32, which
// is the result's; all three broadcast together (numpy). It selects, so a
// NaN or infinity in the branch not taken never reaches the result.
// Gradient: g where cond to a, g elsewhere to b (each summed over the dims
// it was broadcast along); none to cond.
//   auto y = synk::where(synk::greater(x, 0.f), x, 0.01f * x);   // leaky ReLU
Tensor where(Tensor cond, Tensor a, Tensor b);

Tensor operator+(Tensor a, Tensor b);
Tensor operator-(Tensor a, Tensor b);
Tensor operator*(Tensor a, Tensor b);
Tensor operator/(Tensor a, Tensor b);
Tensor operator-(Tensor a);
Tensor operator+(Tensor a, float b);
Tensor operator-(Tensor a, float b);
Tensor operator*(Tensor a, float b);
Tensor operator/(Tensor a, float b);
Tensor operator+(float a, Tensor b);
Tensor operator-(float a, Tensor b);
Tensor operator*(float a, Tensor b);
Tensor operator/(float a, Tensor b);

// Elementwise unary (f32).
Tensor neg(Tensor x);
Tensor relu(Tensor x);
Tensor tanh(Tensor x);
Tensor sigmoid(Tensor x);
Tensor exp(Tensor x);
Tensor log(Tensor x);
Tensor sqrt(Tensor x);
Tensor square(Tensor x);
Tensor pow(Tensor x, float p);
Tensor cast(Tensor x, DType to);
// GELU as PyTorch's nn.GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) by
// default; tanh_approx = true is approximate='tanh',
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). The gradient is the exact
// derivative of the form chosen, one elementwise op (fused on the CPU).
Tensor gelu(Tensor x, bool tanh_approx = false);
// |x|; gradient g * sign(x), 0 at x = 0 (as PyTorch).
Tensor abs(Tensor x);
// Sine and cosine (radians); gradients g cos(x) and -g sin(x).
Tensor sin(Tensor x);
Tensor cos(Tensor x);
// PyTorch's clamp(x, lo, hi): lo where x < lo, hi where x > hi, else x
// (NaN stays NaN). lo > hi (or a NaN bound) is refused with ArgumentError.
// Gradient: g where lo <= x <= hi (the bounds included), else 0.
Tensor clip(Tensor x, float lo, float hi);

// Reductions. Empty `axes` means all axes; negative axes count from the end.
Tensor sum(Tensor x, std::vector<int> axes = {}, bool keepdims = false);
Tensor mean(Tensor x, std::vector<int> axes = {}, bool keepdims = false);
Tensor max(Tensor x, std::vector<int> axes = {}, bool keepdims = false);
Tensor argmax(Tensor x, int axis = -1);  // -> i32

// Layout.
Tensor reshape(Tensor x, Shape shape);  // may keep `batch` where x has it
Tensor flatten(Tensor x, int start_axis = 1);  // [N, a, b, c] -> [N, a*b*c]
Tensor transpose(Tensor x, std::vector<int> perm = {});  // default: reverse
Tensor broadcast_to(Tensor x, Shape shape);

// 2-D matrix product, optionally of transposed operands.
Tensor matmul(Tensor a, Tensor b, bool trans_a = false, bool trans_b = false);

// Neural-network ops.
Tensor softmax(Tensor x, int axis = -1);
Tensor log_softmax(Tensor x, int axis = -1);
// Per-row cross-entropy of softmax(logits [N, C]) against labels [N] (i32).
Tensor softmax_cross_entropy(Tensor logits, Tensor labels);

struct Conv2dOptions {
  int stride = 1;
  int padding = 0;
};
// x [N, C, H, W], w [O, C, KH, KW] -> [N, O, OH, OW] (cross-correlation).
Tensor conv2d(Tensor x, Tensor w, Conv2dOptions opt = {});
// Max over k x k windows; stride defaults to k.
Tensor max_pool2d(Tensor x, int k, int stride = 0, int padding = 0);
// Zeroes each element with probability p and scales the rest by 1/(1-p);
// with deterministic = true it is the identity (evaluation).
Tensor dropout(Tensor x, float p, bool deterministic = false);

}  // namespace synk
