// examples/modern_blocks.cpp — a residual block and a transformer block,
// each trained for a few steps on a synthetic task until its loss halves.
//
// 1. A tiny ResNet (synk::nn::residual_block: convolutions, batch norm,
//    a projection shortcut) learns which quadrant of an 8x8 image is the
//    brightest. The training step updates batch norm's running statistics
//    by itself; the evaluation function uses them and updates nothing.
// 2. A tiny transformer (synk::embedding, synk::nn::transformer_block,
//    AdamW with warm-up and cosine decay, gradient clipping) learns the
//    largest token of a sequence.
// Exit code 0 means both losses halved and the checks held, so CTest runs
// it as a test (example.modern_blocks).
#include <synk/synk.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

using synk::Tensor;

bool residual_demo() {
  constexpr int64_t N = 64, S = 8;
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> xs(N * 2 * S * S);
  std::vector<int32_t> ys(N);
  for (int64_t n = 0; n < N; ++n) {
    const int32_t quadrant = static_cast<int32_t>(n % 4);
    ys[n] = quadrant;
    for (int64_t c = 0; c < 2; ++c)
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j) {
          const bool in_q = (i < S / 2) == (quadrant < 2) && (j < S / 2) == (quadrant % 2 == 0);
          xs[((n * 2 + c) * S + i) * S + j] = u(rng) + (in_q ? 0.5f : 0.f);
        }
  }
  synk::Array X = synk::Array::from(xs, {N, 2, S, S}), Y = synk::Array::from(ys, {N});

  synk::Graph g;
  auto x = g.input("x", synk::f32, {synk::batch, 2, S, S});
  auto y = g.input("y", synk::i32, {synk::batch});
  auto block = synk::nn::residual_block(g, "res", 2, 8, /*stride=*/2);  // [N,2,8,8] -> [N,8,4,4]
  auto fc = synk::nn::dense(g, "fc", 8, 4);
  auto net = [&](bool training) { return fc(synk::global_avg_pool2d(block(x, training))); };
  Tensor loss = synk::mean(synk::softmax_cross_entropy(net(true), y));
  Tensor eval_logits = net(false);
  Tensor correct = synk::sum(synk::cast(synk::equal(synk::argmax(eval_logits, 1), y), synk::f32));
  std::vector<Tensor> params = block.params();
  for (const Tensor& p : fc.params()) params.push_back(p);

  synk::Session s(g, {.seed = 1});
  auto train = s.function({"train", {x, y}, {{loss}}, synk::optim::momentum(params, synk::grad(loss, params),
                                                                          {.lr = 0.1f, .momentum = 0.9f})});
  auto eval = s.function({"eval", {x, y}, {{correct}}, {}});
  float first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    last = train({X, Y})[0].scalar();
    if (step == 0) first = last;
    if (step % 20 == 0) std::printf("residual block: step %2d  loss %.4f\n", step, last);
  }
  synk::Array rm = s.get("res/bn1/running_mean");
  eval({X, Y});
  const bool eval_left_stats = s.get("res/bn1/running_mean").data<float>()[0] == rm.data<float>()[0];
  const float acc = eval({X, Y})[0].scalar() / N;
  std::printf("residual block: loss %.4f -> %.4f, accuracy (running statistics) %.2f, "
              "running_mean[0] %.4f\n", first, last, acc, rm.data<float>()[0]);
  return last < 0.5f * first && rm.data<float>()[0] != 0.f && eval_left_stats && acc > 0.5f;
}

bool transformer_demo() {
  constexpr int64_t N = 128, T = 6, V = 8, D = 32;
  std::mt19937 rng(2);
  std::uniform_int_distribution<int32_t> tok(0, V - 1);
  std::vector<int32_t> ts(N * T), ys(N);
  for (int64_t n = 0; n < N; ++n) {
    ys[n] = 0;
    for (int64_t t = 0; t < T; ++t) ys[n] = std::max(ys[n], ts[n * T + t] = tok(rng));
  }
  synk::Array X = synk::Array::from(ts, {N, T}), Y = synk::Array::from(ys, {N});

  synk::Graph g;
  auto x = g.input("tokens", synk::i32, {synk::batch, T});
  auto y = g.input("y", synk::i32, {synk::batch});
  Tensor table = g.variable("embed", {V, D}, synk::Init::normal(0.f, 0.5f));
  auto block = synk::nn::transformer_block(g, "enc", D, /*heads=*/4, /*mlp_hidden=*/64);
  auto ln = synk::nn::layer_norm(g, "ln", D);
  auto head = synk::nn::dense(g, "head", D, V);
  Tensor h = ln(block(synk::embedding(table, x)));           // [N, T, D]
  Tensor loss = synk::mean(synk::softmax_cross_entropy(head(synk::mean(h, {1})), y));
  std::vector<Tensor> params = {table};
  for (const auto& part : {block.params(), ln.params(), head.params()}) params.insert(params.end(), part.begin(), part.end());

  synk::optim::Options o{.lr = 3e-3f, .weight_decay = 0.01f};
  o.schedule = {.kind = synk::optim::Schedule::warmup_cosine, .warmup_steps = 10, .total_steps = 150};
  auto grads = synk::optim::clip_by_global_norm(synk::grad(loss, params), 1.f);
  synk::Session s(g, {.seed = 1});
  auto train = s.function({"train", {x, y}, {{loss}}, synk::optim::adamw(params, grads, o)});
  float first = 0, last = 0;
  for (int step = 0; step < 150; ++step) {
    last = train({X, Y})[0].scalar();
    if (step == 0) first = last;
    if (step % 50 == 0) std::printf("transformer block: step %3d  loss %.4f\n", step, last);
  }
  std::printf("transformer block: loss %.4f -> %.4f\n", first, last);
  return last < 0.5f * first;
}

}  // namespace

int main() {
  const bool a = residual_demo(), b = transformer_demo();
  if (!a) std::printf("residual block: did not learn, or batch norm's statistics misbehaved\n");
  if (!b) std::printf("transformer block: did not learn\n");
  return a && b ? 0 : 1;
}
