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

}  // namespace synk::nn
