// The Lasagne MNIST example models, built with synk's graph API.
#pragma once

#include <string>

#include <synk/synk.hpp>

namespace mnist {

struct Model {
  synk::Tensor x, y;            // inputs: images [batch,1,28,28] f32, labels [batch] i32
  synk::Tensor train_loss;      // mean cross-entropy with dropout
  synk::Tensor eval_loss;       // mean cross-entropy, deterministic
  synk::Tensor eval_correct;    // number of correct predictions (f32), deterministic
  std::vector<synk::Tensor> params;
};

// "mlp": 784-800-800-10, ReLU, dropout 0.2 on the input and 0.5 after each
// hidden layer. "cnn": conv 5x5x32 ReLU, max-pool 2, conv 5x5x32 ReLU,
// max-pool 2, dropout 0.5, dense 256 ReLU, dropout 0.5, dense 10.
// Weights Glorot uniform, biases zero. Throws synk::ArgumentError for an
// unknown name.
Model build(synk::Graph& g, const std::string& name);

}  // namespace mnist
