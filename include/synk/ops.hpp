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
// maximum, minimum, where, neg, sum, max, argmax, cast, the layout ops and
// concat/slice; every other op takes f32 only and
// refuses i32 with a TypeError. A float scalar with an i32 tensor
// (`x * 2.f`) becomes an i32 constant only if it is a whole number in i32's
// range; anything else (`x * 0.5f`, `x + 2.7f`) would be truncated and is a
// TypeError naming the op and the scalar: cast the tensor to f32 first.
//
// Dims. Tensors may have any number of dims, but the elementwise, layout
// and reduction kernels (and a batched matmul's batch loop) run over at
// most 8 after merging adjacent dims that iterate alike (dims of size 1
// drop out; neighbouring dims merge where both operands broadcast alike,
// where a transpose keeps them adjacent and in order, where a reduction
// reduces or keeps both). An op that would need
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

// Matrix product, optionally of transposed operands (the last two dims are
// the matrix; trans_a takes a as [..., k, m], trans_b b as [..., n, k]).
// Two 2-D operands: one [m, n] product. With more dims (torch.matmul for
// operands of 2 or more dims): a [..., m, k] times b [..., k, n] is one
// product per leading index, -> [..., m, n], the leading (batch) dims
// broadcast like numpy; a 2-D operand is one matrix shared by every
// product (x [N, T, D] times W [D, E] -> [N, T, E]). Attention:
//   auto s = synk::matmul(q, k, false, true);   // [N, H, T, d] x [N, H, T, d]^T -> [N, H, T, T]
//   auto o = synk::matmul(synk::softmax(s), v); // -> [N, H, T, d]
// Operands are f32 with at least 2 dims (reshape a vector to [1, n] or
// [n, 1]); the gradient of a broadcast operand is summed over the dims it
// was broadcast along.
Tensor matmul(Tensor a, Tensor b, bool trans_a = false, bool trans_b = false);

// ---- shape ops: f32 or i32 operands ---------------------------------------
// Joins `xs` (one dtype, at least one) along `axis` (negative counts from
// the end): every other dim equal (a `batch` dim matches only `batch`), the
// joined dim the sum of theirs, as torch.cat. The axis itself must be
// concrete in every operand. One operand is returned as it is. Gradient:
// each operand gets its slice of the incoming gradient.
Tensor concat(const std::vector<Tensor>& xs, int axis);
// Elements [begin, end) of `axis`, step 1: x[..., begin:end] in Python.
// Negative begin/end count from the end of the dim, and both are clamped to
// [0, dim] as Python slicing does, so slice(x, 1, -1, INT64_MAX) is x[:, -1:]
// and an out-of-range or reversed range gives an empty result (size 0 along
// the axis, allowed) rather than an error. The axis must be concrete (not
// `batch`). Gradient: the incoming gradient placed at [begin, end) of a
// zero tensor of x's shape (one SliceGrad step, no zero constants).
Tensor slice(Tensor x, int axis, int64_t begin, int64_t end);
// Rows of `table` [V, D] (f32, concrete dims) picked by `indices` (i32, any
// shape, may hold `batch`): [..., D] with out[i..., :] = table[indices[i...], :],
// as torch.nn.functional.embedding(indices, table). Gradient w.r.t. the
// table: each index's gradient row added into its table row (scatter-add;
// on the CPU in index order, bit for bit the same every call; on CUDA with
// atomic adds, so the summation order of repeated indices may vary).
// An index outside [0, V): the CPU executor throws ArgumentError naming
// the op, the index, its position and V before the step writes anything.
// On CUDA, indices that come straight from a function input in host memory
// are checked the same way before anything runs (the call changes
// nothing); computed or device-resident indices are checked by the kernels,
// which read no memory outside the table, write NaN rows (the gradient
// skips them) and record the first bad position; the call then throws the
// same ArgumentError after its step has run (its outputs are invalid and
// its updates, if any, have been applied).
Tensor embedding(Tensor table, Tensor indices);

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

// Scaled dot-product attention without a mask or dropout, as PyTorch's
// F.scaled_dot_product_attention(q, k, v): softmax(q k^T * scale) v for each
// (batch, head), the softmax over the keys. Layouts:
// - heads_first (PyTorch's): q [..., L, E], k [..., S, E], v [..., S, Ev] ->
//   [..., L, Ev]; the leading dims (batch, heads, ...) are the same in all
//   three (no broadcasting).
// - tokens_first (flash-attention's (batch, seqlen, nheads, headdim)): q
//   [N, L, H, E], k [N, S, H, E], v [N, S, H, Ev] -> [N, L, H, Ev]. This is
//   a dense layer's [N, L, H*E] output reshaped, so multi-head attention
//   needs no transposes into and out of the heads.
// scale 0 means 1/sqrt(E), PyTorch's default. L, S, H, E and Ev must be
// concrete (N may be `batch`); the attention of one (batch, head) runs as
// one kernel (the scores stay in cache, never in memory), and so does its
// gradient (one op for q, k and v together; the scores recomputed).
//   // x [N, T, H*E] -> heads without a transpose
//   auto qh = synk::reshape(q(x), {synk::batch, T, H, E});  // k, v alike
//   auto o = synk::scaled_dot_product_attention(qh, kh, vh,
//                {.layout = synk::AttentionOptions::tokens_first});
struct AttentionOptions {
  enum Layout : uint8_t { heads_first = 0, tokens_first = 1 };
  Layout layout = heads_first;
  float scale = 0.f;  // 0: 1/sqrt(E)
};
Tensor scaled_dot_product_attention(Tensor q, Tensor k, Tensor v, AttentionOptions opt = {});

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
// statistics.
// sync = true (training; PyTorch's SyncBatchNorm): the statistics are those
// of every rank's rows together — the count, the per-channel sum and then
// the centred sum of squares each summed over the ranks with rank_sum — so
// every rank normalises alike and keeps the same running statistics, and 1
// rank on the whole batch computes what N ranks compute on its parts. It
// is made of graph ops (slower than the fused per-rank form, and 3 small
// collectives forward and 2 backward per layer); a lone Session has one
// rank. Calls of a function using it follow rank_sum's rules.
struct BatchNormOptions {
  bool training = true;
  float momentum = 0.1f;
  float eps = 1e-5f;
  bool sync = false;  // statistics over all ranks (SyncBatchNorm): see above
};
Tensor batch_norm(Tensor x, Tensor gamma, Tensor beta, Tensor running_mean, Tensor running_var,
                  BatchNormOptions opt = {});

// The elementwise sum of x over every rank that runs the function, on every
// rank (an all-reduce in the middle of a function): in a Runtime each rank
// gets the sum of all ranks' x; in a lone Session (one rank) it is x. x is
// f32 without a batch dim (reduce a rank's rows first, e.g. with sum). The
// gradient is rank_sum of the incoming gradient (each rank's x reaches
// every rank's loss). Every rank must compute it, in the same order, so a
// Runtime refuses calls of a function that uses it where ranks would run it
// a different number of times: num_slices > 1, a batch smaller than the
// rank count, the deterministic mode's chunks; a training step using it
// all-reduces its gradients after the backward pass (not in buckets during
// it). A Session or CudaSession combines it through
// SessionOptions::rank_sum / CudaSessionOptions::rank_sum (none: one rank).
// On CUDA a function using it runs without CUDA graphs.
//   Tensor total = synk::rank_sum(synk::sum(x, {0}));   // column sums of every rank's rows
Tensor rank_sum(Tensor x);

// Zeroes each element with probability p and scales the rest by 1/(1-p);
// with deterministic = true it is the identity (evaluation).
Tensor dropout(Tensor x, float p, bool deterministic = false);

}  // namespace synk
