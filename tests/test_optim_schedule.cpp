// Learning-rate schedules, AdamW and global-norm gradient clipping
// (synk/optim.hpp): schedule values at the edges of each phase, every
// optimizer following a schedule over several steps of a tiny quadratic
// against a reference computed in double, AdamW against PyTorch's formula,
// the default schedule leaving the graph as it was, and clipping in a
// 2-rank training step equal on both ranks and to one process on the whole
// batch.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using optim::Options;
using optim::Schedule;

constexpr double kPi = 3.14159265358979323846;

// The schedule of optim.hpp in double: the lr of 1-based step s.
double ref_lr(const Options& o, int64_t s) {
  const Schedule& sc = o.schedule;
  const double lr = o.lr, lo = sc.min_lr, W = static_cast<double>(sc.warmup_steps),
               T = static_cast<double>(sc.total_steps);
  if (s <= sc.warmup_steps) return lr * static_cast<double>(s) / W;
  if (sc.kind == Schedule::constant) return lr;
  if (s > sc.total_steps) return lo;
  const double p = (static_cast<double>(s) - W) / (T - W);
  return sc.kind == Schedule::warmup_cosine ? lo + (lr - lo) * 0.5 * (1 + std::cos(kPi * p)) : lr - (lr - lo) * p;
}

// learning_rate(step) evaluated for the given steps, the step fed as f32 or i32.
std::vector<float> lr_values(const Options& o, const std::vector<int64_t>& steps, DType dt) {
  Graph g;
  Tensor s = g.input("s", dt, {});
  Tensor lr = optim::learning_rate(s, o);
  Session sess(g);
  Function f = sess.function({"lr", {s}, {{lr}}, {}});
  std::vector<float> out;
  for (int64_t st : steps) {
    Array a = dt == f32 ? Array::from(std::vector<float>{static_cast<float>(st)}, {})
                        : Array::from(std::vector<int32_t>{static_cast<int32_t>(st)}, {});
    out.push_back(f({a})[0].scalar());
  }
  return out;
}

TEST(OptimSchedule, ValuesAtThePhaseEdges) {
  struct Case {
    std::string name;
    Schedule s;
  };
  const std::vector<Case> cases = {
      {"cosine", {Schedule::warmup_cosine, 4, 20, 0.01f}},
      {"linear", {Schedule::warmup_linear, 4, 20, 0.01f}},
      {"cosine, no warm-up", {Schedule::warmup_cosine, 0, 7, 0.f}},
      {"linear, one warm-up step", {Schedule::warmup_linear, 1, 3, 0.05f}},
      {"constant after warm-up", {Schedule::constant, 5, 0, 0.f}},
  };
  for (const Case& c : cases) {
    Options o{.lr = 0.3f};
    o.schedule = c.s;
    const int64_t W = c.s.warmup_steps, T = std::max(c.s.total_steps, W + 1);
    std::vector<int64_t> steps = {1, W, W + 1, T, T + 5, (W + T) / 2};
    if (W == 0) steps[1] = 1;
    for (DType dt : {f32, i32}) {
      const std::vector<float> got = lr_values(o, steps, dt);
      for (size_t i = 0; i < steps.size(); ++i)
        EXPECT_NEAR(got[i], ref_lr(o, steps[i]), 1e-6) << c.name << " at s = " << steps[i];
    }
    // Exact where the schedule names a value: lr at the last warm-up step,
    // min_lr past the end.
    const std::vector<float> got = lr_values(o, {W, T + 5}, f32);
    if (W > 0) EXPECT_EQ(got[0], o.lr) << c.name;
    if (c.s.kind != Schedule::constant) EXPECT_EQ(got[1], c.s.min_lr) << c.name;
  }
  // The cosine's midpoint is halfway between lr and min_lr; the linear
  // decay's quarter point a quarter of the way down.
  Options o{.lr = 1.f};
  o.schedule = {Schedule::warmup_cosine, 10, 30, 0.2f};
  EXPECT_NEAR(lr_values(o, {20}, f32)[0], 0.6f, 1e-6f);
  o.schedule = {Schedule::warmup_linear, 0, 8, 0.f};
  EXPECT_NEAR(lr_values(o, {2}, f32)[0], 0.75f, 1e-6f);
  EXPECT_NEAR(lr_values(o, {1}, f32)[0], 0.875f, 1e-6f);
}

TEST(OptimSchedule, BadSchedulesAreRefused) {
  Graph g;
  Tensor w = g.variable("w", {3}, Init::zeros());
  Tensor gw = g.input("g", f32, {3});
  Options o;
  o.schedule = {Schedule::warmup_cosine, 10, 10, 0.f};  // no decay phase
  EXPECT_THROW(optim::sgd({w}, {gw}, o), ArgumentError);
  EXPECT_THROW(optim::learning_rate(g.constant(1.f), o), ArgumentError);
  o.schedule = {Schedule::warmup_linear, -1, 10, 0.f};
  EXPECT_THROW(optim::adamw({w}, {gw}, o), ArgumentError);
  o.schedule = {Schedule::constant, 0, 0, 0.f};
  EXPECT_THROW(optim::learning_rate(g.input("v", f32, {2}), o), ShapeError);
  EXPECT_FALSE(g.contains("w/step")) << "a refused optimizer made its counter";
}

// The default schedule builds the fixed-lr graph: no step counter, the same
// nodes as before schedules existed, so results stay bitwise the same.
TEST(OptimSchedule, DefaultScheduleKeepsTheFixedLrGraph) {
  Graph a, b;
  Tensor wa = a.variable("w", {3}, Init::uniform(-1, 1)), wb = b.variable("w", {3}, Init::uniform(-1, 1));
  Tensor ga = a.input("g", f32, {3}), gb = b.input("g", f32, {3});
  auto ua = optim::sgd({wa}, {ga}, {.lr = 0.1f});
  // sgd as it was written before schedules: p - g * lr.
  std::vector<Update> ub = {{wb, wb - gb * 0.1f}};
  EXPECT_FALSE(a.contains("w/step"));
  ASSERT_EQ(ua.size(), ub.size());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a.node(static_cast<int32_t>(i)).op, b.node(static_cast<int32_t>(i)).op) << "node " << i;
    EXPECT_EQ(a.node(static_cast<int32_t>(i)).floats, b.node(static_cast<int32_t>(i)).floats) << "node " << i;
  }
  for (auto* opt : {&optim::momentum, &optim::nesterov, &optim::rmsprop}) {
    Graph h;
    Tensor w = h.variable("w", {3}, Init::zeros());
    (*opt)({w}, {h.input("g", f32, {3})}, {});
    EXPECT_FALSE(h.contains("w/step"));
  }
  // adam's graph with the default schedule: its own counter and nothing of
  // a schedule (no comparison, no where).
  Graph h;
  Tensor w = h.variable("w", {3}, Init::zeros());
  optim::adam({w}, {h.input("g", f32, {3})}, {});
  for (const Node& n : h.nodes()) EXPECT_TRUE(n.op != Op::Where && n.op != Op::Greater) << op_name(n.op);
}

// ---- several steps of each optimizer on a tiny quadratic -----------------------------
// loss = 0.5 sum(c * (w - t)^2), so the gradient is c * (w - t): the steps
// are computed in double by each optimizer's formula with the scheduled lr.

const std::vector<float> kW0 = {0.5f, -1.25f, 2.f, 0.f};
const std::vector<float> kT = {1.f, 1.f, -1.f, 0.25f};
const std::vector<float> kC = {1.f, 3.f, 0.5f, 2.f};

using OptFn = std::function<std::vector<Update>(const std::vector<Tensor>&, const std::vector<Tensor>&, const Options&)>;

// The parameter after each of `steps` steps of `opt` in synk.
std::vector<std::vector<float>> synk_trace(const OptFn& opt, const Options& o, int steps) {
  Graph g;
  const Shape s{4};
  Tensor w = g.variable("w", s, Init::zeros());
  Tensor t = g.input("t", f32, s), c = g.input("c", f32, s);
  Tensor loss = sum(c * square(w - t)) * 0.5f;
  auto ups = opt({w}, grad(loss, {w}), o);
  Session sess(g);
  sess.set("w", Array::from(kW0, s));
  Function f = sess.function({"step", {t, c}, {{loss}}, ups});
  std::vector<std::vector<float>> trace;
  for (int i = 0; i < steps; ++i) {
    f({Array::from(kT, s), Array::from(kC, s)});
    trace.push_back(sess.get("w").to_vector<float>());
  }
  return trace;
}

// One step of an optimizer in double: (w, grad, state, lr of this step, step number).
struct RefState {
  std::vector<double> a, b;  // velocity / m / accu, v
};
using RefStep = std::function<void(std::vector<double>&, const std::vector<double>&, RefState&, double, int64_t)>;

std::vector<std::vector<double>> ref_trace(const RefStep& step, const Options& o, int steps) {
  std::vector<double> w(kW0.begin(), kW0.end());
  RefState st{std::vector<double>(4, 0.0), std::vector<double>(4, 0.0)};
  std::vector<std::vector<double>> trace;
  for (int64_t s = 1; s <= steps; ++s) {
    std::vector<double> gr(4);
    for (size_t i = 0; i < 4; ++i) gr[i] = kC[i] * (w[i] - kT[i]);
    const double lr = o.schedule.kind == Schedule::constant && o.schedule.warmup_steps == 0 ? o.lr : ref_lr(o, s);
    step(w, gr, st, lr, s);
    trace.push_back(w);
  }
  return trace;
}

void expect_traces(const std::vector<std::vector<float>>& got, const std::vector<std::vector<double>>& want,
                   double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t s = 0; s < got.size(); ++s)
    for (size_t i = 0; i < 4; ++i)
      EXPECT_NEAR(got[s][i], want[s][i], tol * (1 + std::fabs(want[s][i]))) << what << ": step " << s + 1 << " w[" << i
                                                                           << "]";
}

// PyTorch's AdamW, step by step (torch.optim.AdamW, amsgrad off).
void adamw_ref(std::vector<double>& w, const std::vector<double>& g, RefState& st, double lr, int64_t t,
               const Options& o) {
  const double b1 = o.beta1, b2 = o.beta2;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(t)), bc2 = 1 - std::pow(b2, static_cast<double>(t));
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] *= 1 - lr * o.weight_decay;
    st.a[i] = b1 * st.a[i] + (1 - b1) * g[i];
    st.b[i] = b2 * st.b[i] + (1 - b2) * g[i] * g[i];
    const double denom = std::sqrt(st.b[i]) / std::sqrt(bc2) + o.eps;
    w[i] -= lr / bc1 * st.a[i] / denom;
  }
}

std::vector<Options> schedules() {
  std::vector<Options> os;
  Options o{.lr = 0.05f};
  os.push_back(o);  // fixed lr
  o.schedule = {Schedule::warmup_cosine, 3, 9, 0.005f};
  os.push_back(o);
  o.schedule = {Schedule::warmup_linear, 2, 7, 0.01f};
  os.push_back(o);
  o.schedule = {Schedule::constant, 4, 0, 0.f};
  os.push_back(o);
  return os;
}

std::string sched_name(const Options& o) {
  const char* k[] = {"constant", "warmup_cosine", "warmup_linear"};
  return std::string(k[o.schedule.kind]) + " W=" + std::to_string(o.schedule.warmup_steps) +
         " T=" + std::to_string(o.schedule.total_steps);
}

constexpr int kSteps = 12;  // past T of every schedule above

TEST(OptimSchedule, EveryOptimizerFollowsTheSchedule) {
  for (Options o : schedules()) {
    o.momentum = 0.8f;
    const std::string sn = sched_name(o);
    expect_traces(synk_trace(optim::sgd, o, kSteps),
                  ref_trace([](auto& w, auto& g, auto&, double lr, int64_t) {
                    for (size_t i = 0; i < w.size(); ++i) w[i] -= lr * g[i];
                  }, o, kSteps), 2e-6, "sgd " + sn);
    const double mu = o.momentum;
    expect_traces(synk_trace(optim::momentum, o, kSteps),
                  ref_trace([mu](auto& w, auto& g, auto& st, double lr, int64_t) {
                    for (size_t i = 0; i < w.size(); ++i) {
                      st.a[i] = mu * st.a[i] - lr * g[i];
                      w[i] += st.a[i];
                    }
                  }, o, kSteps), 2e-6, "momentum " + sn);
    expect_traces(synk_trace(optim::nesterov, o, kSteps),
                  ref_trace([mu](auto& w, auto& g, auto& st, double lr, int64_t) {
                    for (size_t i = 0; i < w.size(); ++i) {
                      st.a[i] = mu * st.a[i] - lr * g[i];
                      w[i] += mu * st.a[i] - lr * g[i];
                    }
                  }, o, kSteps), 2e-6, "nesterov " + sn);
    const double rho = o.rho, eps = o.eps;
    expect_traces(synk_trace(optim::rmsprop, o, kSteps),
                  ref_trace([rho, eps](auto& w, auto& g, auto& st, double lr, int64_t) {
                    for (size_t i = 0; i < w.size(); ++i) {
                      st.a[i] = rho * st.a[i] + (1 - rho) * g[i] * g[i];
                      w[i] -= lr * g[i] / (std::sqrt(st.a[i]) + eps);
                    }
                  }, o, kSteps), 1e-5, "rmsprop " + sn);
    const double b1 = o.beta1, b2 = o.beta2;
    expect_traces(synk_trace(optim::adam, o, kSteps),
                  ref_trace([b1, b2, eps](auto& w, auto& g, auto& st, double lr, int64_t t) {
                    const double lr_t = lr * std::sqrt(1 - std::pow(b2, static_cast<double>(t))) /
                                        (1 - std::pow(b1, static_cast<double>(t)));
                    for (size_t i = 0; i < w.size(); ++i) {
                      st.a[i] = b1 * st.a[i] + (1 - b1) * g[i];
                      st.b[i] = b2 * st.b[i] + (1 - b2) * g[i] * g[i];
                      w[i] -= lr_t * st.a[i] / (std::sqrt(st.b[i]) + eps);
                    }
                  }, o, kSteps), 1e-5, "adam " + sn);
  }
}

TEST(OptimAdamW, MatchesPyTorchsFormula) {
  for (Options o : schedules()) {
    for (float wd : {0.01f, 0.3f, 0.f}) {
      o.weight_decay = wd;
      o.beta2 = 0.99f;
      const std::string what = "adamw wd " + std::to_string(wd) + " " + sched_name(o);
      expect_traces(synk_trace(optim::adamw, o, kSteps),
                    ref_trace([o](auto& w, auto& g, auto& st, double lr, int64_t t) { adamw_ref(w, g, st, lr, t, o); },
                              o, kSteps),
                    1e-5, what);
    }
  }
}

// AdamW is not Adam plus L2: with a zero gradient direction the decay
// alone shrinks the parameter by lr * wd per step (the moments stay 0).
TEST(OptimAdamW, DecayIsDecoupledFromTheGradient) {
  Graph g;
  Tensor w = g.variable("w", {2}, Init::constant(2.f));
  Tensor gw = g.input("g", f32, {2});
  auto ups = optim::adamw({w}, {gw}, {.lr = 0.1f, .weight_decay = 0.5f});
  EXPECT_TRUE(g.contains("w/t"));
  EXPECT_TRUE(g.contains("w/m"));
  Session s(g);
  Function f = s.function({"f", {gw}, {}, ups});
  f({Array::from(std::vector<float>{0.f, 0.f}, {2})});
  f({Array::from(std::vector<float>{0.f, 0.f}, {2})});
  const float want = 2.f * (1 - 0.05f) * (1 - 0.05f);
  EXPECT_FLOAT_EQ(s.get("w").to_vector<float>()[0], want);
  EXPECT_FLOAT_EQ(s.get("w/t").scalar(), 2.f);
}

// The step counter: adam's and adamw's "/t", the others' "/step", made only
// with a schedule and counting 1, 2, ...; remade optimizers share it.
TEST(OptimSchedule, StepCounters) {
  Graph g;
  Tensor w = g.variable("w", {2}, Init::zeros()), u = g.variable("u", {2}, Init::zeros());
  Tensor gw = g.input("g", f32, {2});
  Options o;
  o.schedule = {Schedule::warmup_linear, 2, 5, 0.f};
  auto ups = optim::momentum({w, u}, {gw, gw}, o);
  EXPECT_TRUE(g.contains("w/step"));
  EXPECT_FALSE(g.contains("u/step"));
  EXPECT_FALSE(g.contains("w/t"));
  auto again = optim::momentum({w, u}, {gw, gw}, o);  // reuses the counter
  Session s(g);
  Function f = s.function({"f", {gw}, {}, ups});
  for (int i = 0; i < 3; ++i) f({Array::from(std::vector<float>{1.f, 1.f}, {2})});
  EXPECT_EQ(s.get("w/step").scalar(), 3.f);
}

// ---- clipping -------------------------------------------------------------------

TEST(OptimClip, GlobalNormAsPyTorch) {
  Graph g;
  Tensor a = g.input("a", f32, {2, 2}), b = g.input("b", f32, {3});
  Tensor norm;
  auto big = optim::clip_by_global_norm({a, b}, 1.f, &norm);
  auto loose = optim::clip_by_global_norm({a, b}, 100.f);
  Session s(g);
  Function f = s.function({"f", {a, b}, {{big[0]}, {big[1]}, {norm}, {loose[0]}, {loose[1]}}, {}});
  const std::vector<float> av = {3, 0, -4, 0}, bv = {0, 12, 0};  // norm 13
  auto r = f({Array::from(av, {2, 2}), Array::from(bv, {3})});
  EXPECT_FLOAT_EQ(r[2].scalar(), 13.f);
  const double scale = 1.0 / (13.0 + 1e-6);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(r[0].to_vector<float>()[i], av[i] * scale, 1e-7);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(r[1].to_vector<float>()[i], bv[i] * scale, 1e-7);
  // Under max_norm the gradients pass unchanged (the scale is exactly 1).
  EXPECT_EQ(r[3].to_vector<float>(), av);
  EXPECT_EQ(r[4].to_vector<float>(), bv);
  EXPECT_THROW(optim::clip_by_global_norm({a}, 0.f), ArgumentError);
  EXPECT_THROW(optim::clip_by_global_norm({a}, -1.f), ArgumentError);
  EXPECT_THROW(optim::clip_by_global_norm({}, 1.f), ArgumentError);
  EXPECT_THROW(optim::clip_by_global_norm({g.input("p", i32, {2})}, 1.f), TypeError);
}

// In a TrainSpec the optimizer sees the all-reduced gradient: clipping
// there uses the norm of the combined gradient, so both ranks take the same
// step, equal to one process on the whole batch (and not to clipping each
// rank's own gradient). AdamW with a warm-up/cosine schedule on top: the
// schedule's counter is equal on both ranks too.
TEST(OptimClip, TwoRankTrainingStepClipsTheCombinedGradient) {
  struct M {
    Graph g;
    Tensor x, y, loss;
    nn::Dense l;
    M() {
      x = g.input("x", f32, {batch, 4});
      y = g.input("y", f32, {batch, 2});
      l = nn::dense(g, "l", 4, 2, Init::uniform(-0.5f, 0.5f), Init::uniform(-0.1f, 0.1f));
      loss = mean(square(l(x) - y));
    }
  };
  Options o{.lr = 0.05f, .weight_decay = 0.1f};
  o.schedule = {Schedule::warmup_cosine, 2, 6, 0.001f};
  auto clipped = [o](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
    return optim::adamw(p, optim::clip_by_global_norm(gr, 0.05f), o);
  };
  auto unclipped = [o](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) { return optim::adamw(p, gr, o); };
  std::vector<float> xv(11 * 4), yv(11 * 2);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = 2.f * std::sin(static_cast<float>(i));
  for (size_t i = 0; i < yv.size(); ++i) yv[i] = 3.f * std::cos(static_cast<float>(i));
  Array X = Array::from(xv, {11, 4}), Y = Array::from(yv, {11, 2});

  // One process on the whole batch, clipped and not.
  M ref, raw;
  Session rs(ref.g, {.seed = 3}), us(raw.g, {.seed = 3});
  Function rf = rs.function(FunctionSpec{"ref", {ref.x, ref.y}, {{ref.loss}},
                                         clipped(ref.l.params(), grad(ref.loss, ref.l.params()))});
  Function uf = us.function(FunctionSpec{"raw", {raw.x, raw.y}, {{raw.loss}},
                                         unclipped(raw.l.params(), grad(raw.loss, raw.l.params()))});
  // The gradient norm is far above max_norm: clipping is active.
  {
    M probe;
    Session ps(probe.g, {.seed = 3});
    Tensor norm;
    optim::clip_by_global_norm(grad(probe.loss, probe.l.params()), 0.05f, &norm);
    EXPECT_GT(ps.function({"n", {probe.x, probe.y}, {{norm}}, {}})({X, Y})[0].scalar(), 0.5f);
  }

  M a;
  Runtime rt = synk::fork(synk_test::opts(2, 3));
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {a.x, a.y}, .outputs = {{a.loss}}, .loss = a.loss,
                                         .params = a.l.params(), .optimizer = clipped});
  rt.distribute();
  Data DX = rt.data(X), DY = rt.data(Y);
  for (int it = 0; it < 8; ++it) {
    step({DX, DY});
    rf({X, Y});
    uf({X, Y});
  }
  for (const char* name : {"l/W", "l/b", "l/W/m", "l/W/t"}) {
    const auto r0 = rt.get(name, 0).to_vector<float>(), r1 = rt.get(name, 1).to_vector<float>();
    EXPECT_EQ(r0, r1) << name << " differs between the ranks";
    const auto want = rs.get(name).to_vector<float>();
    ASSERT_EQ(r0.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(r0[i], want[i], 1e-5f) << name << "[" << i << "]";
  }
  EXPECT_EQ(rt.get("l/W/t", 0).scalar(), 8.f);
  // And clipping changed the result.
  const auto clip_w = rs.get("l/W").to_vector<float>(), raw_w = us.get("l/W").to_vector<float>();
  double diff = 0;
  for (size_t i = 0; i < clip_w.size(); ++i) diff = std::max(diff, std::fabs(static_cast<double>(clip_w[i] - raw_w[i])));
  EXPECT_GT(diff, 1e-3);
}

}  // namespace
