// synk/optim.hpp — optimizers as shared-variable updates, learning-rate
// schedules and gradient clipping.
//
// Each optimizer returns the updates of one training step (parameters and
// the state variables it creates, named "<param>/<slot>"), to be passed as
// FunctionSpec::updates together with the loss as an output.
//
//   auto gs = synk::grad(loss, params);
//   auto ups = synk::optim::nesterov(params, gs, {.lr = 0.01f, .momentum = 0.9f});
//   auto train = session.function({"train", {x, y}, {{loss}}, ups});
//
// A schedule changes the learning rate every step inside the compiled
// function: it is computed in the graph from a step counter variable, so no
// function is rebuilt and every rank computes the same value. In a
// TrainSpec the optimizer receives the gradients after the all-reduce, so
// clipping there clips the combined gradient, identically on every rank
// (PyTorch's DDP + clip_grad_norm_ + AdamW + a warm-up/cosine scheduler):
//
//   synk::optim::Options o{.lr = 1e-3f, .weight_decay = 0.05f};
//   o.schedule = {.kind = synk::optim::Schedule::warmup_cosine, .warmup_steps = 100,
//                 .total_steps = 5000, .min_lr = 1e-5f};
//   auto step = rt.train_step({.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss,
//                              .params = params,
//                              .optimizer = [o](const std::vector<synk::Tensor>& p,
//                                               const std::vector<synk::Tensor>& gr) {
//                                return synk::optim::adamw(p, synk::optim::clip_by_global_norm(gr, 1.f), o);
//                              }});
#pragma once

#include <cstdint>
#include <vector>

#include "synk/graph.hpp"

namespace synk::optim {

// The learning rate of step s (1-based: the step being taken), for lr =
// Options::lr, W = warmup_steps, T = total_steps:
//   s <= W      lr * s / W                       (linear warm-up; none if W = 0)
//   W < s <= T  p = (s - W) / (T - W);
//               warmup_cosine: min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi p))
//               warmup_linear: lr - (lr - min_lr) * p
//   s > T       min_lr
// `constant` has no decay: lr after the warm-up, for every step (T is not
// used). The decaying kinds need T > W. Computed in f32 from an f32 step
// counter, exact up to 2^24 steps.
struct Schedule {
  enum Kind { constant, warmup_cosine, warmup_linear } kind = constant;
  int64_t warmup_steps = 0;  // s = 1..W: lr * s / W
  int64_t total_steps = 0;   // W < s <= T: p = (s - W) / (T - W); cosine:
                             // min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi p)); linear:
                             // lr - (lr - min_lr) * p; s > T: min_lr
  float min_lr = 0;
};

struct Options {
  float lr = 0.01f;
  float momentum = 0.9f;   // momentum, nesterov
  float beta1 = 0.9f;      // adam, adamw
  float beta2 = 0.999f;    // adam, adamw
  float rho = 0.9f;        // rmsprop
  float eps = 1e-8f;       // adam, adamw, rmsprop
  float weight_decay = 0.01f;  // adamw only (PyTorch's default)
  // Every optimizer follows it. The default (constant, no warm-up) builds
  // exactly the graph of a fixed lr, with no step counter.
  Schedule schedule;
};

// Each optimizer with a schedule other than the default counts steps in a
// scalar f32 variable: adam's and adamw's "<first param>/t" (which they keep
// anyway), the others' "<first param>/step", made only then.

// p <- p - lr * g
std::vector<Update> sgd(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                        const Options& o = {});
// v <- mu v - lr g;  p <- p + v
std::vector<Update> momentum(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const Options& o = {});
// v <- mu v - lr g;  p <- p + mu v - lr g   (Lasagne's / PyTorch's Nesterov)
std::vector<Update> nesterov(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const Options& o = {});
// Adam with bias correction (a step counter variable "<first param>/t"),
// in Lasagne's form: p <- p - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
std::vector<Update> adam(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                         const Options& o = {});
// a <- rho a + (1 - rho) g^2;  p <- p - lr g / (sqrt(a) + eps)
std::vector<Update> rmsprop(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                            const Options& o = {});
// PyTorch's AdamW (decoupled weight decay), with the step counter
// "<first param>/t" and lr the scheduled rate of step t:
//   p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// (eps where PyTorch puts it, unlike adam above).
std::vector<Update> adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                          const Options& o = {});

// The scheduled learning rate of `step` (a scalar, f32 or i32, 1-based) as a
// scalar f32 graph tensor, e.g. to report it as an output. Throws
// ArgumentError for an invalid schedule.
Tensor learning_rate(Tensor step, const Options& o);

// PyTorch's clip_grad_norm_: with norm = sqrt(sum over all grads of
// sum(g^2)), returns each g * min(1, max_norm / (norm + 1e-6)); the norm
// (before clipping, a scalar f32 tensor) goes to *total_norm when given.
// At least one gradient, all f32 and of one graph; max_norm > 0 and finite
// (ArgumentError / TypeError otherwise).
std::vector<Tensor> clip_by_global_norm(const std::vector<Tensor>& grads, float max_norm,
                                        Tensor* total_norm = nullptr);

}  // namespace synk::optim
