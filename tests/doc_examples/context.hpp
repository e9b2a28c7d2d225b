// tests/doc_examples/context.hpp — what the documentation's code examples
// use without declaring it, for tests/doc_examples/run.sh. The examples are
// fragments (`fn({a})`, `train({X, Y})`): each is compiled in a function
// body that sees these names through `using namespace synk_doc;`, so a name
// an example declares itself hides the one here. Declarations only
// (extern): the examples are compiled with -fsyntax-only, never linked.
//
// One meaning per name across all examples: a Tensor `x`, an Array `X`, a
// synk::Function `train` and a ParallelFunction `step`.
#pragma once

#include <cassert>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include <synk/cuda_session.hpp>
#include <synk/synk.hpp>

namespace synk_doc {

// graph building
extern synk::Graph g;
extern synk::Tensor x, y, W, b, logits, loss, tokens;
extern std::vector<synk::Tensor> params;
extern std::vector<synk::Update> ups, opt_updates;

// one process
extern synk::Session session;
extern synk::Function fn, train;
extern std::vector<synk::ArrayView> inputs;
extern synk::Array X, Y, images, labels, new_images;
extern std::vector<float> xs, ys;
extern int64_t n;

// the runtime
extern synk::Runtime rt;
extern synk::RuntimeOptions opts;
extern synk::TrainSpec spec;
extern synk::ParallelFunction step;
extern std::vector<int64_t> idx;

}  // namespace synk_doc
