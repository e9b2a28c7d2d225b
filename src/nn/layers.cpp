// The layers of synk/nn.hpp: named shared variables plus the ops that use
// them. Variables are named "<layer>/<what>" so checkpoints read like the
// network.
#include "synk/nn.hpp"

#include <cmath>

#include "synk/error.hpp"

namespace synk::nn {

namespace {

void append(std::vector<Tensor>& to, const std::vector<Tensor>& more) { to.insert(to.end(), more.begin(), more.end()); }

}  // namespace

Tensor Dense::operator()(Tensor x) const { return matmul(x, W) + b; }

Dense dense(Graph& g, const std::string& name, int64_t in, int64_t out, Init w, Init b) {
  return {g.variable(name + "/W", {in, out}, w), g.variable(name + "/b", {out}, b)};
}

Tensor Conv2d::operator()(Tensor x) const {
  if (!b.valid()) return conv2d(x, W, opt);
  return conv2d(x, W, opt) + reshape(b, {b.shape()[0], 1, 1});
}

Conv2d conv2d(Graph& g, const std::string& name, int64_t in_channels, int64_t out_channels,
              int64_t k, Conv2dOptions opt, Init w, Init b, bool bias) {
  Tensor W = g.variable(name + "/W", {out_channels, in_channels, k, k}, w);
  return {W, bias ? g.variable(name + "/b", {out_channels}, b) : Tensor(), opt};
}

Init kaiming_normal_fan_out(int64_t out_channels, int64_t k) {
  return Init::normal(0.f, static_cast<float>(std::sqrt(2.0 / static_cast<double>(out_channels * k * k))));
}

// ---- normalisation ----------------------------------------------------------------

Tensor BatchNorm::operator()(Tensor x, bool training) const {
  return synk::batch_norm(x, gamma, beta, running_mean, running_var,
                          {.training = training, .momentum = momentum, .eps = eps, .sync = sync});
}

BatchNorm batch_norm(Graph& g, const std::string& name, int64_t channels, float momentum, float eps) {
  if (channels < 1) throw ShapeError("nn::batch_norm '" + name + "': channels must be positive");
  return {g.variable(name + "/gamma", {channels}, Init::constant(1.f)),
          g.variable(name + "/beta", {channels}, Init::zeros()),
          g.variable(name + "/running_mean", {channels}, Init::zeros()),
          g.variable(name + "/running_var", {channels}, Init::constant(1.f)), momentum, eps};
}

Tensor LayerNorm::operator()(Tensor x) const { return synk::layer_norm(x, gamma, beta, eps); }

LayerNorm layer_norm(Graph& g, const std::string& name, int64_t dim, float eps) {
  if (dim < 1) throw ShapeError("nn::layer_norm '" + name + "': dim must be positive");
  return {g.variable(name + "/gamma", {dim}, Init::constant(1.f)), g.variable(name + "/beta", {dim}, Init::zeros()),
          eps};
}

// ---- residual block -------------------------------------------------------------------

Tensor ResidualBlock::operator()(Tensor x, bool training) const {
  Tensor h = relu(bn1(conv2d(x, W1, {.stride = stride, .padding = 1}), training));
  h = bn2(conv2d(h, W2, {.stride = 1, .padding = 1}), training);
  Tensor shortcut = Wdown.valid() ? bn_down(conv2d(x, Wdown, {.stride = stride, .padding = 0}), training) : x;
  return relu(h + shortcut);
}

std::vector<Tensor> ResidualBlock::params() const {
  std::vector<Tensor> p = {W1};
  append(p, bn1.params());
  p.push_back(W2);
  append(p, bn2.params());
  if (Wdown.valid()) {
    p.push_back(Wdown);
    append(p, bn_down.params());
  }
  return p;
}

ResidualBlock residual_block(Graph& g, const std::string& name, int64_t in_channels, int64_t out_channels,
                             int stride) {
  if (in_channels < 1 || out_channels < 1 || stride < 1)
    throw ShapeError("nn::residual_block '" + name + "': channels and stride must be positive (in " +
                     std::to_string(in_channels) + ", out " + std::to_string(out_channels) + ", stride " +
                     std::to_string(stride) + ")");
  ResidualBlock b;
  b.stride = stride;
  b.W1 = g.variable(name + "/conv1/W", {out_channels, in_channels, 3, 3}, kaiming_normal_fan_out(out_channels, 3));
  b.bn1 = batch_norm(g, name + "/bn1", out_channels);
  b.W2 = g.variable(name + "/conv2/W", {out_channels, out_channels, 3, 3}, kaiming_normal_fan_out(out_channels, 3));
  b.bn2 = batch_norm(g, name + "/bn2", out_channels);
  if (stride != 1 || in_channels != out_channels) {
    b.Wdown = g.variable(name + "/down/W", {out_channels, in_channels, 1, 1}, kaiming_normal_fan_out(out_channels, 1));
    b.bn_down = batch_norm(g, name + "/down_bn", out_channels);
  }
  return b;
}

// ---- attention ------------------------------------------------------------------------

Tensor MultiHeadAttention::operator()(Tensor x) const {
  if (x.ndim() != 3)
    throw ShapeError("nn::MultiHeadAttention: expects [N, T, dim], got " + to_string(x.shape()));
  const Shape s = x.shape();
  const Dim T = s[1], D = q.W.shape()[0];
  if (s[2] != D) throw ShapeError("nn::MultiHeadAttention: input " + to_string(s) + " is not of width " +
                                  std::to_string(D));
  const Dim dh = D / heads;
  // [N, T, D] -> [N, T, heads, dh]: each token's heads side by side, the
  // layout the attention op takes as it is (no transposes in or out).
  auto split = [&](Tensor t) { return reshape(t, {s[0], T, heads, dh}); };
  Tensor o = scaled_dot_product_attention(split(q(x)), split(k(x)), split(v(x)),
                                          {.layout = AttentionOptions::tokens_first});
  return proj(reshape(o, {s[0], T, D}));
}

std::vector<Tensor> MultiHeadAttention::params() const {
  std::vector<Tensor> p;
  for (const Dense* d : {&q, &k, &v, &proj}) append(p, d->params());
  return p;
}

MultiHeadAttention multi_head_attention(Graph& g, const std::string& name, int64_t dim, int64_t heads) {
  if (dim < 1 || heads < 1 || dim % heads != 0)
    throw ShapeError("nn::multi_head_attention '" + name + "': dim " + std::to_string(dim) +
                     " must be a positive multiple of heads " + std::to_string(heads));
  return {dense(g, name + "/q", dim, dim), dense(g, name + "/k", dim, dim), dense(g, name + "/v", dim, dim),
          dense(g, name + "/proj", dim, dim), heads};
}

// ---- transformer block ----------------------------------------------------------------------

Tensor TransformerBlock::operator()(Tensor x) const {
  Tensor h = x + attn(ln1(x));
  return h + fc2(gelu(fc1(ln2(h)), tanh_gelu));
}

std::vector<Tensor> TransformerBlock::params() const {
  std::vector<Tensor> p = ln1.params();
  append(p, attn.params());
  append(p, ln2.params());
  append(p, fc1.params());
  append(p, fc2.params());
  return p;
}

TransformerBlock transformer_block(Graph& g, const std::string& name, int64_t dim, int64_t heads,
                                   int64_t mlp_hidden, bool tanh_gelu) {
  if (mlp_hidden < 1) throw ShapeError("nn::transformer_block '" + name + "': mlp_hidden must be positive");
  return {layer_norm(g, name + "/ln1", dim), layer_norm(g, name + "/ln2", dim),
          multi_head_attention(g, name + "/attn", dim, heads), dense(g, name + "/fc1", dim, mlp_hidden),
          dense(g, name + "/fc2", mlp_hidden, dim), tanh_gelu};
}

}  // namespace synk::nn
