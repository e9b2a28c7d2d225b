// synk/nn.hpp — layers: named shared variables plus the ops that use them.
//
// Layers create their variables in the graph when made and can then be
// applied to any number of tensors (e.g. once with dropout for training and
// once deterministically for evaluation, sharing weights).
//
//   auto l1 = synk::nn::dense(g, "l1", 784, 800);          // W [784,800], b [800]
//   auto h  = synk::relu(l1(x));
//   auto c1 = synk::nn::conv2d(g, "c1", 1, 32, 5);          // W [32,1,5,5], b [32]
//   std::vector<synk::Tensor> ps = l1.params();             // {W, b}, for grad() and optim
//   for (auto& p : c1.params()) ps.push_back(p);
//
// Layers that behave differently in training and evaluation (batch norm,
// and the blocks holding one) take `training`: true uses the batch's
// statistics and, in a function that computes it, updates the running
// statistics (synk::batch_norm's state updates); false uses the running
// statistics and updates nothing. Build the network twice over the same
// layers, once for the training step and once for evaluation:
//
//   auto b1 = synk::nn::residual_block(g, "res1", 16, 32, /*stride=*/2);
//   synk::Tensor train_h = b1(x, true), eval_h = b1(x, false);
//
//   auto blk = synk::nn::transformer_block(g, "enc0", 64, 4, 128);   // pre-LN
//   synk::Tensor y = blk(tokens);                                   // [N, T, 64] -> [N, T, 64]
#pragma once

#include <string>
#include <vector>

#include "synk/graph.hpp"
#include "synk/ops.hpp"

namespace synk::nn {

struct Dense {
  Tensor W, b;  // [in, out], [out]
  Tensor operator()(Tensor x) const;
  std::vector<Tensor> params() const { return {W, b}; }
};
Dense dense(Graph& g, const std::string& name, int64_t in, int64_t out,
            Init w = Init::glorot_uniform(), Init b = Init::zeros());

struct Conv2d {
  Tensor W, b;  // [out, in, k, k], [out]; b is empty for a bias-free conv
  Conv2dOptions opt;
  Tensor operator()(Tensor x) const;
  std::vector<Tensor> params() const { return b.valid() ? std::vector<Tensor>{W, b} : std::vector<Tensor>{W}; }
};
// bias = false: no b variable (a conv followed by batch norm, as in ResNet,
// whose beta does a bias's work).
Conv2d conv2d(Graph& g, const std::string& name, int64_t in_channels, int64_t out_channels,
              int64_t k, Conv2dOptions opt = {}, Init w = Init::glorot_uniform(),
              Init b = Init::zeros(), bool bias = true);

// He et al.'s initialisation for a convolution followed by ReLU (PyTorch's
// kaiming_normal_(mode="fan_out", nonlinearity="relu"), as torchvision's
// ResNets use): normal, std sqrt(2 / (out_channels * k * k)).
Init kaiming_normal_fan_out(int64_t out_channels, int64_t k);

// Batch norm over the channels (axis 1) of [N, C] or [N, C, H, W], like
// PyTorch's BatchNorm1d/2d: variables "<name>/gamma" (ones), "<name>/beta"
// (zeros), "<name>/running_mean" (zeros) and "<name>/running_var" (ones),
// all [C]. Only gamma and beta are parameters; the running statistics are
// state, kept per rank (like DDP) and saved in checkpoints. sync = true:
// training statistics over every rank's rows (SyncBatchNorm; synk::
// batch_norm's BatchNormOptions::sync says what that costs and requires).
struct BatchNorm {
  Tensor gamma, beta, running_mean, running_var;
  float momentum = 0.1f, eps = 1e-5f;
  bool sync = false;
  Tensor operator()(Tensor x, bool training) const;
  std::vector<Tensor> params() const { return {gamma, beta}; }
};
BatchNorm batch_norm(Graph& g, const std::string& name, int64_t channels, float momentum = 0.1f,
                     float eps = 1e-5f);

// Layer norm over the last axis, like PyTorch's LayerNorm(dim):
// "<name>/gamma" (ones) and "<name>/beta" (zeros), [dim].
struct LayerNorm {
  Tensor gamma, beta;
  float eps = 1e-5f;
  Tensor operator()(Tensor x) const;
  std::vector<Tensor> params() const { return {gamma, beta}; }
};
LayerNorm layer_norm(Graph& g, const std::string& name, int64_t dim, float eps = 1e-5f);

// The ResNet basic block (He et al. 2016, torchvision's BasicBlock):
// relu(bn2(conv3x3(relu(bn1(conv3x3_stride(x))))) + shortcut(x)), the
// shortcut being x itself, or bn(conv1x1_stride(x)) where the stride or the
// channel count changes. Convolutions without bias (batch norm follows
// each), weights kaiming_normal_fan_out. Variables "<name>/conv1/W",
// "<name>/bn1/...", "<name>/conv2/W", "<name>/bn2/...", and where there is a
// projection "<name>/down/W", "<name>/down_bn/...". set_sync(true): all its
// batch norms synchronized (BatchNorm::sync).
struct ResidualBlock {
  Tensor W1, W2, Wdown;  // Wdown invalid for the identity shortcut
  BatchNorm bn1, bn2, bn_down;
  int stride = 1;
  void set_sync(bool on) { bn1.sync = bn2.sync = bn_down.sync = on; }
  Tensor operator()(Tensor x, bool training) const;  // [N, in, H, W] -> [N, out, H/stride, W/stride]
  std::vector<Tensor> params() const;
};
ResidualBlock residual_block(Graph& g, const std::string& name, int64_t in_channels,
                             int64_t out_channels, int stride = 1);

// Multi-head self-attention over [N, T, dim] (PyTorch's MultiheadAttention
// with batch_first, no mask, no dropout): separate query, key and value
// projections ("<name>/q", "/k", "/v": Dense dim x dim), heads of dim/heads
// each, softmax(q k^T / sqrt(dim/heads)) v, then the output projection
// "<name>/proj". dim must divide by heads. The heads are the projections
// reshaped to [N, T, heads, dim/heads] and go through one
// scaled_dot_product_attention (tokens_first): no transposes.
struct MultiHeadAttention {
  Dense q, k, v, proj;
  int64_t heads = 1;
  Tensor operator()(Tensor x) const;
  std::vector<Tensor> params() const;
};
MultiHeadAttention multi_head_attention(Graph& g, const std::string& name, int64_t dim, int64_t heads);

// A pre-LN transformer encoder block (as in ViT):
//   x + attn(ln1(x)), then h + fc2(gelu(fc1(ln2(h)))),
// with "<name>/ln1", "<name>/attn", "<name>/ln2", "<name>/fc1" (dim x
// mlp_hidden), "<name>/fc2" (mlp_hidden x dim). GELU in its exact (erf)
// form unless tanh_gelu.
struct TransformerBlock {
  LayerNorm ln1, ln2;
  MultiHeadAttention attn;
  Dense fc1, fc2;
  bool tanh_gelu = false;
  Tensor operator()(Tensor x) const;  // [N, T, dim] -> [N, T, dim]
  std::vector<Tensor> params() const;
};
TransformerBlock transformer_block(Graph& g, const std::string& name, int64_t dim, int64_t heads,
                                   int64_t mlp_hidden, bool tanh_gelu = false);

}  // namespace synk::nn
