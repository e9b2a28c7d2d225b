// The benchmark's models, built with synk's graph API: the Lasagne MNIST
// example models (mlp, cnn) and two modern ones (resnet, vit), each with
// the optimizer it trains with. bench/peers/torch_mnist.py builds the same
// models in PyTorch (layers, initialisation, optimizer, schedule).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <synk/synk.hpp>

namespace mnist {

// What the optimizer needs to know about the run. lr <= 0: the model's own
// default learning rate.
struct TrainConfig {
  float lr = 0;
  float momentum = 0.9f;
  int64_t steps_per_epoch = 1;
  int64_t epochs = 1;
  bool sync_bn = false;  // resnet: batch norm statistics over all ranks (SyncBatchNorm)
};

using Optimizer = std::function<std::vector<synk::Update>(const std::vector<synk::Tensor>& params,
                                                          const std::vector<synk::Tensor>& grads)>;

struct Model {
  synk::Tensor x, y;            // inputs: images [batch,1,28,28] f32, labels [batch] i32
  synk::Tensor train_loss;      // mean cross-entropy in training mode (dropout, batch statistics)
  synk::Tensor eval_loss;       // mean cross-entropy in evaluation mode
  synk::Tensor eval_correct;    // number of correct predictions (f32), evaluation mode
  std::vector<synk::Tensor> params;
  Optimizer optimizer;          // the update of one training step
  std::string optimizer_name;   // e.g. "nesterov lr 0.01 momentum 0.9"
};

// "mlp": 784-800-800-10, ReLU, dropout 0.2 on the input and 0.5 after each
// hidden layer. "cnn": conv 5x5x32 ReLU, max-pool 2, conv 5x5x32 ReLU,
// max-pool 2, dropout 0.5, dense 256 ReLU, dropout 0.5, dense 10. Both:
// weights Glorot uniform, biases zero, Nesterov momentum (lr 0.01).
// "resnet": conv 3x3x16 + batch norm + ReLU, then three stages of one
// basic residual block each (16, 32 with stride 2, 64 with stride 2:
// 28 -> 14 -> 7), global average pooling, dense 10; SGD with momentum
// (lr 0.05) with the same warm-up and cosine decay as vit's.
// "vit": 7x7 patches (16 tokens of 49 pixels) embedded to 64, a class
// token, learned position embeddings, 4 pre-LN transformer blocks (4
// heads, GELU MLP of 128), a final layer norm, dense 10 on the class
// token; AdamW (lr 2e-3, weight decay 0.05) with linear warm-up over the
// first epoch (at most a fifth of the run) and cosine decay to 0.
// Throws synk::ArgumentError for an unknown name.
Model build(synk::Graph& g, const std::string& name, const TrainConfig& cfg = {});

}  // namespace mnist
