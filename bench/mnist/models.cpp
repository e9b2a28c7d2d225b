// Every model is applied twice to the same layers: once in training mode
// (dropout, batch statistics) for the training step, once in evaluation
// mode for the test set, sharing the weights.
#include "models.hpp"

#include <algorithm>
#include <cstdio>

namespace mnist {

using synk::Tensor;

namespace {

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[128];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

// Linear warm-up over the first epoch (at most a fifth of the run), then
// cosine decay to 0 at the end of the run: the final model is annealed, so
// its test accuracy is steady from run to run.
synk::optim::Schedule warmup_cosine(const TrainConfig& cfg) {
  const int64_t total = std::max<int64_t>(2, cfg.steps_per_epoch * cfg.epochs);
  return {.kind = synk::optim::Schedule::warmup_cosine,
          .warmup_steps = std::max<int64_t>(1, std::min(cfg.steps_per_epoch, total / 5)),
          .total_steps = total};
}

}  // namespace

Model build(synk::Graph& g, const std::string& name, const TrainConfig& cfg) {
  Model m;
  m.x = g.input("x", synk::f32, {synk::batch, 1, 28, 28});
  m.y = g.input("y", synk::i32, {synk::batch});
  std::function<Tensor(Tensor, bool)> net;  // (x, training) -> logits
  auto nesterov = [&](float default_lr) {
    const synk::optim::Options o{.lr = cfg.lr > 0 ? cfg.lr : default_lr, .momentum = cfg.momentum};
    m.optimizer = [o](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
      return synk::optim::nesterov(p, gr, o);
    };
    m.optimizer_name = fmt("nesterov lr %g momentum %g", o.lr, o.momentum);
  };
  if (name == "mlp") {
    auto l1 = synk::nn::dense(g, "l1", 784, 800);
    auto l2 = synk::nn::dense(g, "l2", 800, 800);
    auto l3 = synk::nn::dense(g, "out", 800, 10);
    m.params = {l1.W, l1.b, l2.W, l2.b, l3.W, l3.b};
    net = [=](Tensor x, bool training) {
      Tensor h = synk::dropout(synk::flatten(x), 0.2f, !training);
      h = synk::dropout(synk::relu(l1(h)), 0.5f, !training);
      h = synk::dropout(synk::relu(l2(h)), 0.5f, !training);
      return l3(h);
    };
    nesterov(0.01f);
  } else if (name == "cnn") {
    auto c1 = synk::nn::conv2d(g, "conv1", 1, 32, 5);
    auto c2 = synk::nn::conv2d(g, "conv2", 32, 32, 5);
    auto d1 = synk::nn::dense(g, "fc1", 32 * 4 * 4, 256);
    auto d2 = synk::nn::dense(g, "out", 256, 10);
    m.params = {c1.W, c1.b, c2.W, c2.b, d1.W, d1.b, d2.W, d2.b};
    net = [=](Tensor x, bool training) {
      Tensor h = synk::max_pool2d(synk::relu(c1(x)), 2);
      h = synk::max_pool2d(synk::relu(c2(h)), 2);
      h = synk::dropout(synk::flatten(h), 0.5f, !training);
      h = synk::dropout(synk::relu(d1(h)), 0.5f, !training);
      return d2(h);
    };
    nesterov(0.01f);
  } else if (name == "resnet") {
    Tensor stem = g.variable("stem/W", {16, 1, 3, 3}, synk::nn::kaiming_normal_fan_out(16, 3));
    auto stem_bn = synk::nn::batch_norm(g, "stem/bn", 16);
    auto b1 = synk::nn::residual_block(g, "res1", 16, 16, 1);
    auto b2 = synk::nn::residual_block(g, "res2", 16, 32, 2);
    auto b3 = synk::nn::residual_block(g, "res3", 32, 64, 2);
    stem_bn.sync = cfg.sync_bn;
    for (auto* b : {&b1, &b2, &b3}) b->set_sync(cfg.sync_bn);
    auto fc = synk::nn::dense(g, "fc", 64, 10);
    m.params = {stem};
    for (const auto& part : {stem_bn.params(), b1.params(), b2.params(), b3.params(), fc.params()})
      m.params.insert(m.params.end(), part.begin(), part.end());
    net = [=](Tensor x, bool training) {
      Tensor h = synk::relu(stem_bn(synk::conv2d(x, stem, {.stride = 1, .padding = 1}), training));
      h = b3(b2(b1(h, training), training), training);
      return fc(synk::global_avg_pool2d(h));
    };
    synk::optim::Options o{.lr = cfg.lr > 0 ? cfg.lr : 0.05f, .momentum = cfg.momentum};
    o.schedule = warmup_cosine(cfg);
    m.optimizer = [o](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
      return synk::optim::momentum(p, gr, o);
    };
    m.optimizer_name = fmt("momentum lr %g momentum %g, warm-up %g steps, cosine", o.lr, o.momentum,
                           static_cast<double>(o.schedule.warmup_steps));
  } else if (name == "vit") {
    constexpr int64_t P = 7, D = 64, tokens = (28 / P) * (28 / P), depth = 4, heads = 4, hidden = 128;
    auto embed = synk::nn::dense(g, "patch", P * P, D);
    Tensor cls = g.variable("cls", {1, 1, D}, synk::Init::normal(0.f, 0.02f));
    Tensor pos = g.variable("pos", {tokens + 1, D}, synk::Init::normal(0.f, 0.02f));
    std::vector<synk::nn::TransformerBlock> blocks;
    for (int64_t i = 0; i < depth; ++i)
      blocks.push_back(synk::nn::transformer_block(g, "block" + std::to_string(i), D, heads, hidden));
    auto ln = synk::nn::layer_norm(g, "ln", D);
    auto head = synk::nn::dense(g, "head", D, 10);
    m.params = embed.params();
    m.params.push_back(cls);
    m.params.push_back(pos);
    for (const auto& b : blocks) {
      auto p = b.params();
      m.params.insert(m.params.end(), p.begin(), p.end());
    }
    for (const auto& part : {ln.params(), head.params()}) m.params.insert(m.params.end(), part.begin(), part.end());
    net = [=](Tensor x, bool) {
      // [N,1,28,28] -> [N,4,7,4,7] -> [N,4,4,7,7] -> [N,16,49]: row-major 7x7 patches.
      Tensor patches = synk::reshape(
          synk::transpose(synk::reshape(x, {synk::batch, 28 / P, P, 28 / P, P}), {0, 1, 3, 2, 4}),
          {synk::batch, tokens, P * P});
      Tensor h = synk::concat({synk::broadcast_to(cls, {synk::batch, 1, D}), embed(patches)}, 1) + pos;
      for (const auto& b : blocks) h = b(h);
      h = synk::reshape(synk::slice(ln(h), 1, 0, 1), {synk::batch, D});
      return head(h);
    };
    synk::optim::Options o{.lr = cfg.lr > 0 ? cfg.lr : 2e-3f, .weight_decay = 0.05f};
    o.schedule = warmup_cosine(cfg);
    m.optimizer = [o](const std::vector<Tensor>& p, const std::vector<Tensor>& gr) {
      return synk::optim::adamw(p, gr, o);
    };
    m.optimizer_name = fmt("adamw lr %g weight decay 0.05, warm-up %g steps, cosine", o.lr,
                           static_cast<double>(o.schedule.warmup_steps));
  } else {
    throw synk::ArgumentError("unknown model '" + name + "' (expected mlp, cnn, resnet or vit)");
  }
  m.train_loss = synk::mean(synk::softmax_cross_entropy(net(m.x, true), m.y));
  Tensor logits = net(m.x, false);
  m.eval_loss = synk::mean(synk::softmax_cross_entropy(logits, m.y));
  m.eval_correct = synk::sum(synk::cast(synk::equal(synk::argmax(logits, 1), m.y), synk::f32));
  return m;
}

}  // namespace mnist
