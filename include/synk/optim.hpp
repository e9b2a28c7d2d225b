// synk/optim.hpp — optimizers as shared-variable updates.
//
// Each optimizer returns the updates of one training step (parameters and
// the state variables it creates, named "<param>/<slot>"), to be passed as
// FunctionSpec::updates together with the loss as an output.
//
//   auto gs = synk::grad(loss, params);
//   auto ups = synk::optim::nesterov(params, gs, {.lr = 0.01f, .momentum = 0.9f});
//   auto train = session.function({"train", {x, y}, {{loss}}, ups});
#pragma once

#include <vector>

#include "synk/graph.hpp"

namespace synk::optim {

struct Options {
  float lr = 0.01f;
  float momentum = 0.9f;   // momentum, nesterov
  float beta1 = 0.9f;      // adam
  float beta2 = 0.999f;    // adam
  float rho = 0.9f;        // rmsprop
  float eps = 1e-8f;       // adam, rmsprop
};

// p <- p - lr * g
std::vector<Update> sgd(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                        const Options& o = {});
// v <- mu v - lr g;  p <- p + v
std::vector<Update> momentum(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const Options& o = {});
// v <- mu v - lr g;  p <- p + mu v - lr g   (Lasagne's / PyTorch's Nesterov)
std::vector<Update> nesterov(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const Options& o = {});
// Adam with bias correction (a step counter variable "<first param>/t").
std::vector<Update> adam(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                         const Options& o = {});
// a <- rho a + (1 - rho) g^2;  p <- p - lr g / (sqrt(a) + eps)
std::vector<Update> rmsprop(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                            const Options& o = {});

}  // namespace synk::optim
