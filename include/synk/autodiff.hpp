// synk/autodiff.hpp — reverse-mode gradients as graph nodes.
//
// grad() appends the backward graph to the loss's graph and returns one
// gradient tensor per requested tensor, so gradients are ordinary outputs
// or update terms of a compiled function.
//
//   auto loss = synk::mean(synk::softmax_cross_entropy(logits, y));
//   auto gs = synk::grad(loss, {W, b});   // gs[0] has W's shape
#pragma once

#include <vector>

#include "synk/graph.hpp"

namespace synk {

// d loss / d wrt[i] for a scalar f32 loss. A tensor the loss does not depend
// on gets a zero gradient. Integer-valued paths (argmax, equal, labels)
// carry no gradient.
std::vector<Tensor> grad(Tensor loss, const std::vector<Tensor>& wrt);

}  // namespace synk
