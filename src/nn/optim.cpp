// Optimizers written as graph updates, so a training step is one compiled
// function: gradients, optimizer arithmetic and the variable writes. The
// learning-rate schedule and gradient clipping are graph ops too, so they
// change per step without rebuilding anything.
#include "synk/optim.hpp"

#include "synk/error.hpp"
#include "synk/ops.hpp"

#include <cmath>
#include <string>

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

// Whether the learning rate changes with the step. The default schedule
// does not: the optimizers then build exactly their fixed-lr graph (the lr a
// float constant folded into the arithmetic, no step counter), so results
// stay bitwise those of a fixed lr.
bool scheduled(const Schedule& s) { return s.kind != Schedule::constant || s.warmup_steps > 0; }

void check_schedule(const char* who, const Options& o) {
  const Schedule& s = o.schedule;
  auto fail = [&](const std::string& what) {
    throw ArgumentError(std::string("optim::") + who + ": schedule: " + what + " (warmup_steps = " +
                        std::to_string(s.warmup_steps) + ", total_steps = " + std::to_string(s.total_steps) + ")");
  };
  if (s.kind != Schedule::constant && s.kind != Schedule::warmup_cosine && s.kind != Schedule::warmup_linear)
    fail("unknown kind " + std::to_string(static_cast<int>(s.kind)));
  if (s.warmup_steps < 0 || s.total_steps < 0) fail("step counts must be >= 0");
  if (s.kind != Schedule::constant && s.total_steps <= s.warmup_steps)
    fail("a decaying schedule needs total_steps > warmup_steps");
  if (!std::isfinite(o.lr) || !std::isfinite(s.min_lr)) fail("lr and min_lr must be finite");
}

// The lr tensor of step s (f32 scalar, 1-based), the schedule checked.
Tensor scheduled_lr(Tensor s, const Options& o) {
  const Schedule& sc = o.schedule;
  Graph& g = s.graph();
  if (!scheduled(sc)) return g.constant(o.lr);
  const float W = static_cast<float>(sc.warmup_steps), T = static_cast<float>(sc.total_steps);
  // After the warm-up: the decay over W < s <= T, min_lr beyond T (selected,
  // so it is min_lr exactly), or lr for the constant kind.
  Tensor after;
  if (sc.kind == Schedule::constant) {
    after = g.constant(o.lr);
  } else {
    Tensor p = (s - W) / (T - W);
    Tensor decay = sc.kind == Schedule::warmup_cosine
                       ? (1.f + synk::cos(p * 3.14159265358979323846f)) * 0.5f * (o.lr - sc.min_lr) + sc.min_lr
                       : o.lr - p * (o.lr - sc.min_lr);
    after = where(greater(s, T), g.constant(sc.min_lr), decay);
  }
  if (sc.warmup_steps == 0) return after;
  // s / W first, so the last warm-up step gives lr exactly.
  return where(greater(s, W), after, s / W * o.lr);
}

// The step counter of an optimizer with a schedule (adam and adamw keep
// their own, "/t"): the 1-based number of the step being taken, and its
// update.
Tensor step_counter(const std::vector<Tensor>& params, std::vector<Update>& u) {
  Tensor c = state(params[0].graph(), params[0].name() + "/step", {});
  Tensor s = c + 1.f;
  u.push_back({c, s});
  return s;
}

// What multiplies the gradient: the fixed lr, or the schedule's tensor.
struct Lr {
  float fixed = 0.f;
  Tensor t;  // valid when scheduled
};
Tensor operator*(const Tensor& a, const Lr& lr) { return lr.t.valid() ? a * lr.t : a * lr.fixed; }

// The lr of an optimizer without its own counter: creates the counter only
// when the lr is scheduled.
Lr plain_lr(const char* who, const std::vector<Tensor>& params, std::vector<Update>& u, const Options& o) {
  check_schedule(who, o);
  if (!scheduled(o.schedule) || params.empty()) return {o.lr, {}};
  return {o.lr, scheduled_lr(step_counter(params, u), o)};
}

}  // namespace

Tensor learning_rate(Tensor step, const Options& o) {
  if (!step.valid()) throw ArgumentError("optim::learning_rate: empty step tensor");
  if (!step.shape().empty())
    throw ShapeError("optim::learning_rate: the step must be a scalar (shape []), got " + to_string(step.shape()));
  check_schedule("learning_rate", o);
  return scheduled_lr(cast(step, DType::f32), o);
}

std::vector<Update> sgd(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const Options& o) {
  check("sgd", params, grads);
  std::vector<Update> u;
  const Lr lr = plain_lr("sgd", params, u, o);
  for (size_t i = 0; i < params.size(); ++i) u.push_back({params[i], params[i] - grads[i] * lr});
  return u;
}

std::vector<Update> momentum(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const Options& o) {
  check("momentum", params, grads);
  std::vector<Update> u;
  const Lr lr = plain_lr("momentum", params, u, o);
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor v = slot(params[i], "velocity");
    Tensor v2 = v * o.momentum - grads[i] * lr;
    u.push_back({v, v2});
    u.push_back({params[i], params[i] + v2});
  }
  return u;
}

std::vector<Update> nesterov(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                             const Options& o) {
  check("nesterov", params, grads);
  std::vector<Update> u;
  const Lr lr = plain_lr("nesterov", params, u, o);
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor v = slot(params[i], "velocity");
    Tensor step = grads[i] * lr;
    Tensor v2 = v * o.momentum - step;
    u.push_back({v, v2});
    u.push_back({params[i], params[i] + (v2 * o.momentum - step)});
  }
  return u;
}

namespace {

// Adam's and AdamW's step counter "<first param>/t": its update goes into u;
// returns the count of the step being taken (t + 1).
Tensor adam_step(const std::vector<Tensor>& params, std::vector<Update>& u) {
  Tensor t = state(params[0].graph(), params[0].name() + "/t", {});
  Tensor t2 = t + 1.f;
  u.push_back({t, t2});
  return t2;
}

}  // namespace

std::vector<Update> adam(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const Options& o) {
  check("adam", params, grads);
  check_schedule("adam", o);
  std::vector<Update> u;
  if (params.empty()) return u;
  Tensor t2 = adam_step(params, u);
  // lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), with b^t = exp(t log b).
  Tensor b1t = exp(t2 * std::log(o.beta1));
  Tensor b2t = exp(t2 * std::log(o.beta2));
  Tensor lr_t = scheduled(o.schedule) ? sqrt(1.f - b2t) / (1.f - b1t) * scheduled_lr(t2, o)
                                      : sqrt(1.f - b2t) / (1.f - b1t) * o.lr;
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
  const Lr lr = plain_lr("rmsprop", params, u, o);
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor a = slot(params[i], "accu");
    Tensor a2 = a * o.rho + square(grads[i]) * (1.f - o.rho);
    u.push_back({a, a2});
    u.push_back({params[i], params[i] - grads[i] * lr / (sqrt(a2) + o.eps)});
  }
  return u;
}

std::vector<Update> adamw(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const Options& o) {
  check("adamw", params, grads);
  check_schedule("adamw", o);
  std::vector<Update> u;
  if (params.empty()) return u;
  Tensor t2 = adam_step(params, u);
  // The bias corrections 1 - b^t, with b^t = exp(t log b) as adam's.
  Tensor bc1 = 1.f - exp(t2 * std::log(o.beta1));
  Tensor bc2_sqrt = sqrt(1.f - exp(t2 * std::log(o.beta2)));
  const bool sched = scheduled(o.schedule);
  Tensor lr = sched ? scheduled_lr(t2, o) : Tensor();
  Tensor step_size = sched ? lr / bc1 : o.lr / bc1;
  // The decay factor 1 - lr wd: a float constant for a fixed lr.
  Tensor decay = sched ? 1.f - lr * o.weight_decay : Tensor();
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor m = slot(params[i], "m"), v = slot(params[i], "v");
    Tensor p = params[i];
    if (o.weight_decay != 0.f) p = sched ? p * decay : p * (1.f - o.lr * o.weight_decay);
    Tensor m2 = m * o.beta1 + grads[i] * (1.f - o.beta1);
    Tensor v2 = v * o.beta2 + square(grads[i]) * (1.f - o.beta2);
    u.push_back({m, m2});
    u.push_back({v, v2});
    // PyTorch: p.addcdiv_(m, sqrt(v) / sqrt(bc2) + eps, value = -step_size).
    u.push_back({params[i], p - step_size * (m2 / (sqrt(v2) / bc2_sqrt + o.eps))});
  }
  return u;
}

std::vector<Tensor> clip_by_global_norm(const std::vector<Tensor>& grads, float max_norm, Tensor* total_norm) {
  if (!(max_norm > 0.f) || !std::isfinite(max_norm))
    throw ArgumentError("optim::clip_by_global_norm: max_norm must be positive and finite, got " +
                        std::to_string(max_norm));
  // Checked before any node is made, like the ops.
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].valid()) throw ArgumentError("optim::clip_by_global_norm: gradient " + std::to_string(i) + " is empty");
    if (grads[i].dtype() != DType::f32)
      throw TypeError("optim::clip_by_global_norm: gradient " + std::to_string(i) + " is " +
                      dtype_name(grads[i].dtype()) + ", expected f32");
    if (&grads[i].graph() != &grads[0].graph())
      throw ArgumentError("optim::clip_by_global_norm: gradients from different graphs");
  }
  if (grads.empty()) throw ArgumentError("optim::clip_by_global_norm: no gradients");
  Tensor sq;
  for (const Tensor& gr : grads) {
    Tensor s = sum(square(gr));
    sq = sq.valid() ? sq + s : s;
  }
  Tensor norm = sqrt(sq);
  if (total_norm) *total_norm = norm;
  // PyTorch: clip_coef = max_norm / (norm + 1e-6), clamped to at most 1.
  Tensor scale = minimum(max_norm / (norm + 1e-6f), 1.f);
  std::vector<Tensor> out;
  out.reserve(grads.size());
  for (const Tensor& gr : grads) out.push_back(gr * scale);
  return out;
}

}  // namespace synk::optim
