// synk/synk.hpp — everything in one include: every public header of
// include/synk/ (cuda_session.hpp too; in a build without CUDA it still
// compiles, and CudaSession's constructor throws BackendError).
//
// synk builds compute graphs with gradients, compiles them into functions
// and runs them: in one process on the CPU (synk::Session) or one GPU
// (synk::CudaSession), and data-parallel over forked worker processes, one
// rank per core or per GPU (synk::fork, synk::Runtime; runtime.hpp).
//
//   #include <synk/synk.hpp>
//   synk::Graph g;
//   auto x = g.input("x", synk::f32, {synk::batch, 784});
//   auto y = g.input("y", synk::i32, {synk::batch});
//   auto l1 = synk::nn::dense(g, "l1", 784, 10);
//   auto loss = synk::mean(synk::softmax_cross_entropy(l1(x), y));
//   auto ups = synk::optim::sgd(l1.params(), synk::grad(loss, l1.params()));
//   synk::Session s(g, {.seed = 1});
//   auto train = s.function({"train", {x, y}, {{loss}}, ups});
//   float l = train({X, Y})[0].scalar();
#pragma once

#include "synk/config.hpp"
#include "synk/array.hpp"
#include "synk/autodiff.hpp"
#include "synk/checkpoint.hpp"
#include "synk/cuda_session.hpp"
#include "synk/data.hpp"
#include "synk/dtype.hpp"
#include "synk/error.hpp"
#include "synk/graph.hpp"
#include "synk/idx.hpp"
#include "synk/nn.hpp"
#include "synk/ops.hpp"
#include "synk/optim.hpp"
#include "synk/runtime.hpp"
#include "synk/serialize.hpp"
#include "synk/session.hpp"
