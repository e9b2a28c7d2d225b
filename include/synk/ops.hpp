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
// tensors take add, sub, mul, div (truncating), equal, neg, sum, max,
// argmax, cast and the layout ops; every other op takes f32 only and
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
// Mean over k x k windows (stride defaults to k), zero padding counted in
// the divisor (PyTorch's count_include_pad = true): every window divides by
// k * k. padding must be at most k / 2, as PyTorch requires.
Tensor avg_pool2d(Tensor x, int k, int stride = 0, int padding = 0);
// [N, C, H, W] -> [N, C]: the mean of each channel's plane (AdaptiveAvgPool
// to 1x1, then flatten).
Tensor global_avg_pool2d(Tensor x);

// Layer normalisation over the last axis, as PyTorch's nn.LayerNorm(D):
// y = (x - mean) / sqrt(var + eps) * gamma + beta, mean and biased variance
// over the last axis of each row; gamma, beta [D] (D = x's last dim,
// concrete). One fused pass per row forward; the backward is one fused op
// for dx, graph reductions for dgamma and dbeta.
//   auto h = synk::layer_norm(x, g.variable("ln_g", {D}, Init::constant(1)),
//                             g.variable("ln_b", {D}));
Tensor layer_norm(Tensor x, Tensor gamma, Tensor beta, float eps = 1e-5f);

// Batch normalisation over channel axis 1 of x [N, C, ...] (BatchNorm1d on
// [N, C], BatchNorm2d on [N, C, H, W]); gamma, beta [C]; running_mean and
// running_var f32 variables [C] (initialise running_var with ones).
// training: normalises with the batch's mean and biased variance over every
// axis but 1, and every function that computes the result updates the
// running statistics as PyTorch does, without being asked (a state update,
// Graph::add_state_update): running = (1 - momentum) * running + momentum
// * batch statistic, the variance's unbiased (needs more than one value per
// channel). In a Runtime each rank keeps its own running statistics, from
// its own rows (as DDP: Runtime::get(var, rank)); rank 0's are those saved.
// Evaluation (training = false): normalises with the running statistics
// and updates nothing. The gradient of x is one fused op (the standard
// formula through the batch statistics in training; through the constant
// running statistics in evaluation); no gradient flows into the running
// statistics. sync (statistics reduced over all ranks, SyncBatchNorm) is
// not supported: it is refused with an ArgumentError.
struct BatchNormOptions {
  bool training = true;
  float momentum = 0.1f;
  float eps = 1e-5f;
  bool sync = false;  // refused: see above
};
Tensor batch_norm(Tensor x, Tensor gamma, Tensor beta, Tensor running_mean, Tensor running_var,
                  BatchNormOptions opt = {});

// Zeroes each element with probability p and scales the rest by 1/(1-p);
// with deterministic = true it is the identity (evaluation).
Tensor dropout(Tensor x, float p, bool deterministic = false);

}  // namespace synk
