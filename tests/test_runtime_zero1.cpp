// Tests of the sharded optimizer (TrainSpec::shard_optimizer, ZeRO-1):
// parameters and losses after several steps are the same bits as the
// unsharded step for every optimizer, 1 to 4 ranks, equal and unequal
// shares, a rank without rows, slices, gradient buckets, deterministic
// mode and the group's staging path; each rank keeps only its slice of
// the state; get / set / snapshot / restore see the state under its
// unsharded names, so a run resumes onto another rank count, sharded or
// not; an optimizer that is not elementwise is refused.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cuda_ranks_skip.hpp"
#include "runtime/core.hpp"  // test_hooks
#include "support/runtime_helpers.hpp"
#include "synk/config.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;

// Three dense layers with dropout: 1634 parameters in six tensors, so the
// slices (16-element aligned) cut through tensors and the last is padded.
struct Mlp : synk_test::DropoutMlp {
  explicit Mlp(bool drop = true) : DropoutMlp(Init::uniform(-0.1f, 0.1f), drop) {}
};

Array features(int64_t rows) { return synk_test::sine_rows(rows, 6, 0.41f, 1.5f); }
Array labels(int64_t rows) { return synk_test::cyclic_labels(rows, 5, 4); }

using synk_test::bytes_of;

using Optimizer = std::function<std::vector<Update>(const std::vector<Tensor>&, const std::vector<Tensor>&)>;

struct Named {
  const char* name;
  Optimizer opt;
  std::vector<const char*> slots;  // its state per param
};

std::vector<Named> optimizers() {
  optim::Options sched{.lr = 0.05f};
  sched.schedule = {.kind = optim::Schedule::warmup_cosine, .warmup_steps = 2, .total_steps = 6, .min_lr = 0.001f};
  return {
      {"sgd", [](auto& p, auto& g) { return optim::sgd(p, g, {.lr = 0.1f}); }, {}},
      {"momentum", [](auto& p, auto& g) { return optim::momentum(p, g, {.lr = 0.1f, .momentum = 0.9f}); }, {"velocity"}},
      {"nesterov", [](auto& p, auto& g) { return optim::nesterov(p, g, {.lr = 0.1f, .momentum = 0.9f}); }, {"velocity"}},
      {"adam", [](auto& p, auto& g) { return optim::adam(p, g, {.lr = 0.01f}); }, {"m", "v"}},
      {"rmsprop", [](auto& p, auto& g) { return optim::rmsprop(p, g, {.lr = 0.01f}); }, {"accu"}},
      {"adamw", [](auto& p, auto& g) { return optim::adamw(p, g, {.lr = 0.01f, .weight_decay = 0.05f}); }, {"m", "v"}},
      {"adamw+cosine", [sched](auto& p, auto& g) { return optim::adamw(p, g, sched); }, {"m", "v"}},
      {"momentum+cosine", [sched](auto& p, auto& g) { return optim::momentum(p, g, sched); }, {"velocity"}},
  };
}

struct Run {
  int n = 1;
  bool shard = false;
  size_t bucket_bytes = 0;
  bool deterministic = false;
  int num_slices = 1;
  bool dropout = true;  // off where runs of different call counts are compared
  const char* device = "cpu";
  CommBackend comm = CommBackend::automatic;
};

struct Outcome {
  std::vector<std::vector<uint8_t>> losses, params, state;
};

// Steps over batches of `rows` (of 29 rows of data); every rank's params,
// and the state of each param read by its unsharded name.
Outcome train(const Run& run, const Named& o, const std::vector<int64_t>& batch_rows) {
  Mlp m(run.dropout);
  RuntimeOptions ro = synk_test::opts(run.n, 5);
  ro.bucket_bytes = run.bucket_bytes;
  ro.deterministic = run.deterministic;
  ro.device = run.device;
  ro.comm = run.comm;
  Runtime rt = synk::fork(ro);
  ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss,
                                         .params = m.params, .optimizer = o.opt, .shard_optimizer = run.shard});
  rt.distribute();
  Data X = rt.data(features(29)), Y = rt.data(labels(29));
  Outcome r;
  int s = 0;
  for (int64_t rows : batch_rows) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < rows; ++i) idx.push_back((s * 7 + i * 3) % 29);
    r.losses.push_back(bytes_of(step({X, Y}, {.batch = idx, .num_slices = run.num_slices}).at(0)));
    ++s;
  }
  for (const Tensor& p : m.params)
    for (int k = 0; k < run.n; ++k) r.params.push_back(bytes_of(rt.get(p, k)));
  for (const Tensor& p : m.params)
    for (const char* slot : o.slots) r.state.push_back(bytes_of(rt.get(p.name() + "/" + slot)));
  rt.close();
  return r;
}

std::string label(const Run& r, const Named& o) {
  return std::string(o.name) + ", " + r.device + (r.comm == CommBackend::nccl ? " nccl" : r.comm == CommBackend::host_staged ? " host-staged" : "") + ", " + std::to_string(r.n) + " ranks, buckets " + std::to_string(r.bucket_bytes) +
         (r.deterministic ? ", deterministic" : "") + ", slices " + std::to_string(r.num_slices);
}

void expect_same(const Run& run, const Named& o, const std::vector<int64_t>& batches) {
  Run plain = run;
  plain.shard = false;
  const Outcome want = train(plain, o, batches);
  const Outcome got = train(run, o, batches);
  EXPECT_EQ(got.losses, want.losses) << label(run, o) << ": losses differ";
  EXPECT_EQ(got.params, want.params) << label(run, o) << ": parameters differ";
  EXPECT_EQ(got.state, want.state) << label(run, o) << ": optimizer state differs";
}

// 12 rows: equal shares for 1-4 ranks; 29 and 7: unequal (weighted sums);
// 2: some ranks have no rows.
const std::vector<int64_t> kBatches{12, 29, 7, 2, 12};

TEST(RuntimeZero1, SameBitsAsUnshardedEveryOptimizer) {
  for (const Named& o : optimizers())
    for (int n : {1, 2, 3, 4}) expect_same({.n = n, .shard = true}, o, kBatches);
}

TEST(RuntimeZero1, SameBitsWithBucketsSlicesAndStaging) {
  const Named o = optimizers()[3];  // adam
  for (int n : {2, 3}) {
    for (size_t bucket : {size_t{1}, size_t{600}, size_t{1} << 20}) expect_same({.n = n, .shard = true, .bucket_bytes = bucket}, o, kBatches);
    expect_same({.n = n, .shard = true, .num_slices = 2}, o, kBatches);
    // Through the group's staging (no shared gradient buffers): the comm's
    // reduce_scatter instead of the peers' reduce-scatter.
    synk::detail::test_hooks().no_shared_grads = true;
    expect_same({.n = n, .shard = true}, o, kBatches);
    expect_same({.n = n, .shard = true, .bucket_bytes = 600}, o, kBatches);
    synk::detail::test_hooks().no_shared_grads = false;
  }
}

TEST(RuntimeZero1, SameBitsDeterministicAnyRankCount) {
  // Deterministic mode: the same bits whatever the rank count, sharded or not.
  const Named o = optimizers()[5];  // adamw
  const Outcome one = train({.n = 1, .deterministic = true}, o, kBatches);
  for (int n : {2, 3, 4}) {
    const Outcome got = train({.n = n, .shard = true, .deterministic = true}, o, kBatches);
    EXPECT_EQ(got.losses, one.losses) << n << " ranks";
    for (size_t t = 0; t < one.params.size(); ++t)
      for (int k = 0; k < n; ++k) EXPECT_EQ(got.params[t * n + k], one.params[t]) << n << " ranks, param " << t << " rank " << k;
    EXPECT_EQ(got.state, one.state) << n << " ranks";
  }
}

// Each rank holds only its slice: the state variables are [S], S =
// ceil(1634 / n) rounded up to 16.
TEST(RuntimeZero1, StateIsOneSlicePerRank) {
  for (int n : {1, 2, 3, 4}) {
    Mlp m;
    Runtime rt = synk::fork(synk_test::opts(n, 5));
    ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}},
                                           .loss = m.loss, .params = m.params, .optimizer = optimizers()[3].opt,
                                           .shard_optimizer = true});
    rt.distribute();
    const int64_t S = ((1634 + n - 1) / n + 15) / 16 * 16;
    int64_t state = 0;
    for (const auto& [name, a] : rt.snapshot()) EXPECT_EQ(name.find("__synk"), std::string::npos) << name;
    for (size_t id = 0; id < m.g.size(); ++id) {
      const Node& nd = m.g.node(static_cast<int32_t>(id));
      if (nd.op != Op::Variable || nd.name.rfind("__synk_zero1/", 0) != 0 || nd.shape.empty()) continue;
      EXPECT_EQ(nd.shape, (Shape{S})) << nd.name;
      if (nd.name.find("/m") != std::string::npos || nd.name.find("/v") != std::string::npos) state += S;
    }
    EXPECT_EQ(state, 2 * S) << n << " ranks: adam's two moments, one slice each";
    EXPECT_FALSE(m.g.contains("l1/W/m")) << "no unsharded state is made";
    // The unsharded names answer, in the params' shapes.
    EXPECT_EQ(rt.get("l2/W/m").shape(), (Shape{40, 30}));
    EXPECT_EQ(rt.get("l1/W/t").shape(), (Shape{}));
  }
}

// A run sharded over 3 ranks, saved after 3 steps, goes on from the
// snapshot over 2 ranks sharded and over 4 unsharded (and the other way
// round): the same bits as the run that never stopped (deterministic
// mode, whose bits do not depend on the rank count, and no dropout, whose
// masks follow the call count).
TEST(RuntimeZero1, SnapshotRestoresOntoAnyRankCount) {
  const Named o = optimizers()[6];  // adamw with a schedule: a step counter too
  const std::vector<int64_t> first{12, 29, 7}, then{12, 2, 12};
  struct Case { int n1; bool s1; int n2; bool s2; };
  for (Case cs : {Case{3, true, 2, true}, Case{3, true, 4, false}, Case{2, false, 3, true}}) {
    std::vector<int64_t> all = first;
    all.insert(all.end(), then.begin(), then.end());
    const Outcome want = train({.n = cs.n2, .deterministic = true, .dropout = false}, o, all);
    RuntimeOptions ro1 = synk_test::opts(cs.n1, 5), ro2 = synk_test::opts(cs.n2, 5);
    ro1.deterministic = ro2.deterministic = true;
    VarValues saved;
    {
      Mlp m(false);
      Runtime rt = synk::fork(ro1);
      ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}},
                                             .loss = m.loss, .params = m.params, .optimizer = o.opt,
                                             .shard_optimizer = cs.s1});
      rt.distribute();
      Data X = rt.data(features(29)), Y = rt.data(labels(29));
      int s = 0;
      for (int64_t rows : first) {
        std::vector<int64_t> idx;
        for (int64_t i = 0; i < rows; ++i) idx.push_back((s * 7 + i * 3) % 29);
        step({X, Y}, {.batch = idx});
        ++s;
      }
      saved = rt.snapshot();
    }
    Mlp m(false);
    Runtime rt = synk::fork(ro2);
    ParallelFunction step = rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}},
                                           .loss = m.loss, .params = m.params, .optimizer = o.opt,
                                           .shard_optimizer = cs.s2});
    rt.distribute();
    // The names match whichever way each run was made.
    std::vector<std::string> have, want_names;
    for (const auto& [name, a] : rt.snapshot()) have.push_back(name);
    for (const auto& [name, a] : saved) want_names.push_back(name);
    std::sort(have.begin(), have.end());
    std::sort(want_names.begin(), want_names.end());
    EXPECT_EQ(have, want_names);
    rt.restore(saved);
    Data X = rt.data(features(29)), Y = rt.data(labels(29));
    int s = static_cast<int>(first.size());
    std::vector<std::vector<uint8_t>> losses;
    for (int64_t rows : then) {
      std::vector<int64_t> idx;
      for (int64_t i = 0; i < rows; ++i) idx.push_back((s * 7 + i * 3) % 29);
      losses.push_back(bytes_of(step({X, Y}, {.batch = idx}).at(0)));
      ++s;
    }
    const std::string what = std::to_string(cs.n1) + (cs.s1 ? " sharded" : "") + " -> " + std::to_string(cs.n2) +
                             (cs.s2 ? " sharded" : "");
    EXPECT_EQ(losses, std::vector<std::vector<uint8_t>>(want.losses.begin() + 3, want.losses.end())) << what;
    size_t t = 0;
    for (const Tensor& p : m.params)
      for (int k = 0; k < cs.n2; ++k, ++t) EXPECT_EQ(bytes_of(rt.get(p, k)), want.params[t]) << what << " " << p.name();
  }
}

TEST(RuntimeZero1, SetOfShardedStateReachesEveryRank) {
  Mlp m;
  Runtime rt = synk::fork(synk_test::opts(3, 5));
  rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss, .params = m.params,
                 .optimizer = optimizers()[1].opt, .shard_optimizer = true});
  rt.distribute();
  std::vector<float> v(40 * 30);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f;
  rt.set("l2/W/velocity", Array::from(v, {40, 30}));
  EXPECT_EQ(rt.get("l2/W/velocity").to_vector<float>(), v);
  EXPECT_EQ(rt.get("l1/b/velocity").to_vector<float>(), std::vector<float>(40, 0.f)) << "its neighbours untouched";
  EXPECT_THROW(rt.set("l2/W/velocity", Array::from(v, {40, 30}), 1), ArgumentError);
  EXPECT_THROW(rt.set("l2/W/velocity", Array::from(v, {30, 40})), ShapeError);
}

TEST(RuntimeZero1, RefusesAnOptimizerThatIsNotElementwise) {
  Mlp m;
  Runtime rt = synk::fork(synk_test::opts(2, 5));
  try {
    rt.train_step({.name = "train", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss, .params = m.params,
                   .optimizer = [](const std::vector<Tensor>& p, const std::vector<Tensor>& g) {
                     return optim::adamw(p, optim::clip_by_global_norm(g, 1.f), {});
                   },
                   .shard_optimizer = true});
    FAIL() << "clip_by_global_norm was accepted";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("not elementwise"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("clip_by_global_norm"), std::string::npos) << e.what();
  }
  // State not named after its parameter.
  EXPECT_THROW(rt.train_step({.name = "t2", .inputs = {m.x, m.y}, .outputs = {{m.loss}}, .loss = m.loss,
                              .params = m.params,
                              .optimizer = [&](const std::vector<Tensor>& p, const std::vector<Tensor>& g) {
                                Tensor other = m.g.variable("elsewhere", p[0].shape(), Init::zeros());
                                return std::vector<Update>{{other, other + g[0]}, {p[0], p[0] - g[0]}};
                              },
                              .shard_optimizer = true}),
               ArgumentError);
}

// CUDA ranks (Gpu*: skipped without a device; the CUDA emulation runs them,
// SYNK_EMU_DEVICES=4 for NCCL over 4 ranks): NCCL's reduce-scatter and
// all-gather, and host staging (the comm's default reduce_scatter), with
// and without buckets, and deterministic mode.
TEST(GpuRuntimeZero1, SameBitsAsUnsharded) {
  if (std::string why = synk_test::no_cuda_ranks(); !why.empty()) GTEST_SKIP() << why;
  const std::vector<int64_t> batches{12, 29, 2};
  const std::vector<Named> all = optimizers();
  for (const Named& o : {all[3], all[6]}) {  // adam, adamw with a schedule
    expect_same({.n = 2, .shard = true, .device = "cuda", .comm = CommBackend::host_staged}, o, batches);
    expect_same({.n = 3, .shard = true, .bucket_bytes = 600, .device = "cuda", .comm = CommBackend::host_staged}, o, batches);
    expect_same({.n = 2, .shard = true, .deterministic = true, .device = "cuda", .comm = CommBackend::host_staged}, o, batches);
    if (!SYNK_HAVE_NCCL) continue;
    for (int n = 1; n <= std::min(4, synk::detail::cuda_devices()); ++n) {  // one GPU per NCCL rank
      expect_same({.n = n, .shard = true, .device = "cuda", .comm = CommBackend::nccl}, o, batches);
      if (n >= 2) expect_same({.n = n, .shard = true, .bucket_bytes = 600, .device = "cuda", .comm = CommBackend::nccl}, o, batches);
    }
  }
}

}  // namespace
