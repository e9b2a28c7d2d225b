// Optimizers written as graph updates, so a training step is one compiled
// function: gradients, optimizer arithmetic and the variable writes.
#include "synk/optim.hpp"

#include "synk/error.hpp"
#include "synk/ops.hpp"

#include <cmath>

namespace synk::optim {

namespace {

void check(const char* who, const std::vector<Tensor>& params, const std::vector<Tensor>& grads) {
  if (params.size() != grads.size())
    throw ArgumentError(std::string("optim::") + who + ": " + std::to_string(params.size()) +
                        " params but " + std::to_string(grads.size()) + " gradients");
  for (size_t i = 0; i < params.size(); ++i) {
    if (!params[i].valid() || params[i].node().op != Op::Variable)
      throw ArgumentError(std::string("optim::") + who + ": param " + std::to_string(i) +
                          " is not a shared variable");
    if (!grads[i].valid() || grads[i].shape() != params[i].shape())
      throw ShapeError(std::string("optim::") + who + ": gradient of '" + params[i].name() +
                       "' has the wrong shape");
  }
}

// The optimizer state of `p`, created on first use. Building the same
// optimizer again over the same graph (e.g. remaking a training step after
// a runtime restart) reuses the state instead of failing on the name.
Tensor state(Graph& g, const std::string& name, const Shape& shape) {
  if (g.contains(name)) {
    Tensor t = g.find(name);
    if (t.node().op != Op::Variable || t.shape() != shape || t.dtype() != DType::f32)
      throw ArgumentError("optimizer state '" + name + "' exists but is not an f32 variable of shape " +
                          to_string(shape));
    return t;
  }
  return g.variable(name, shape, Init::zeros());
}

Tensor slot(const Tensor& p, const char* name) { return state(p.graph(), p.name() + "/" + name, p.shape()); }

}  // namespace

std::vector<Update> sgd(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const Options& o) {
  check("sgd", params, grads);
  std::vector<Update> u;
  for (size_t i = 0; i < params.size(); ++i) u.push_back({params[i], params[i] - grads[i] * o.lr});
  return u;
}

std::vector<Update> momentum(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const Options& o) {
  check("momentum", params, grads);
  std::vector<Update> u;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor v = slot(params[i], "velocity");
    Tensor v2 = v * o.momentum - grads[i] * o.lr;
    u.push_back({v, v2});
    u.push_back({params[i], params[i] + v2});
  }
  return u;
}

std::vector<Update> nesterov(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const Options& o) {
  check("nesterov", params, grads);
  std::vector<Update> u;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor v = slot(params[i], "velocity");
    Tensor step = grads[i] * o.lr;
    Tensor v2 = v * o.momentum - step;
    u.push_back({v, v2});
    u.push_back({params[i], params[i] + (v2 * o.momentum - step)});
  }
  return u;
}

std::vector<Update> adam(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const Options& o) {
  check("adam", params, grads);
  std::vector<Update> u;
  if (params.empty()) return u;
  Graph& g = params[0].graph();
  Tensor t = state(g, params[0].name() + "/t", {});
  Tensor t2 = t + 1.f;
  u.push_back({t, t2});
  // lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), with b^t = exp(t log b).
  Tensor b1t = exp(t2 * std::log(o.beta1));
  Tensor b2t = exp(t2 * std::log(o.beta2));
  Tensor lr_t = sqrt(1.f - b2t) / (1.f - b1t) * o.lr;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor m = slot(params[i], "m"), v = slot(params[i], "v");
    Tensor m2 = m * o.beta1 + grads[i] * (1.f - o.beta1);
    Tensor v2 = v * o.beta2 + square(grads[i]) * (1.f - o.beta2);
    u.push_back({m, m2});
    u.push_back({v, v2});
    u.push_back({params[i], params[i] - lr_t * m2 / (sqrt(v2) + o.eps)});
  }
  return u;
}

std::vector<Update> rmsprop(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                            const Options& o) {
  check("rmsprop", params, grads);
  std::vector<Update> u;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor a = slot(params[i], "accu");
    Tensor a2 = a * o.rho + square(grads[i]) * (1.f - o.rho);
    u.push_back({a, a2});
    u.push_back({params[i], params[i] - grads[i] * o.lr / (sqrt(a2) + o.eps)});
  }
  return u;
}

}  // namespace synk::optim
