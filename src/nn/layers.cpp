// Dense and conv layers: variables named "<layer>/W", "<layer>/b".
#include "synk/nn.hpp"

namespace synk::nn {

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

}  // namespace synk::nn
