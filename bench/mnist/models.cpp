// Both models are applied twice to the same layers: once with dropout for
// training, once deterministically for evaluation, sharing the weights.
#include "models.hpp"

#include <functional>

namespace mnist {

using synk::Tensor;

Model build(synk::Graph& g, const std::string& name) {
  Model m;
  m.x = g.input("x", synk::f32, {synk::batch, 1, 28, 28});
  m.y = g.input("y", synk::i32, {synk::batch});
  std::function<Tensor(Tensor, bool)> net;
  if (name == "mlp") {
    auto l1 = synk::nn::dense(g, "l1", 784, 800);
    auto l2 = synk::nn::dense(g, "l2", 800, 800);
    auto l3 = synk::nn::dense(g, "out", 800, 10);
    m.params = {l1.W, l1.b, l2.W, l2.b, l3.W, l3.b};
    net = [=](Tensor x, bool det) {
      Tensor h = synk::dropout(synk::flatten(x), 0.2f, det);
      h = synk::dropout(synk::relu(l1(h)), 0.5f, det);
      h = synk::dropout(synk::relu(l2(h)), 0.5f, det);
      return l3(h);
    };
  } else if (name == "cnn") {
    auto c1 = synk::nn::conv2d(g, "conv1", 1, 32, 5);
    auto c2 = synk::nn::conv2d(g, "conv2", 32, 32, 5);
    auto d1 = synk::nn::dense(g, "fc1", 32 * 4 * 4, 256);
    auto d2 = synk::nn::dense(g, "out", 256, 10);
    m.params = {c1.W, c1.b, c2.W, c2.b, d1.W, d1.b, d2.W, d2.b};
    net = [=](Tensor x, bool det) {
      Tensor h = synk::max_pool2d(synk::relu(c1(x)), 2);
      h = synk::max_pool2d(synk::relu(c2(h)), 2);
      h = synk::dropout(synk::flatten(h), 0.5f, det);
      h = synk::dropout(synk::relu(d1(h)), 0.5f, det);
      return d2(h);
    };
  } else {
    throw synk::ArgumentError("unknown model '" + name + "' (expected mlp or cnn)");
  }
  m.train_loss = synk::mean(synk::softmax_cross_entropy(net(m.x, false), m.y));
  Tensor logits = net(m.x, true);
  m.eval_loss = synk::mean(synk::softmax_cross_entropy(logits, m.y));
  m.eval_correct = synk::sum(synk::cast(synk::equal(synk::argmax(logits, 1), m.y), synk::f32));
  return m;
}

}  // namespace mnist
