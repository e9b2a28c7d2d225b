// synk/session.hpp — one process, the CPU: compile functions of a graph and
// call them. synk::Runtime (runtime.hpp) runs one Session on every CPU rank,
// master included (CUDA ranks run a CudaSession, cuda_session.hpp).
//
// A Session holds the values of the graph's shared variables (initialised
// from `seed`) and the compiled functions. Compilation is lazy per batch
// size: the first call with a new row count plans buffers for it; later
// calls with that size allocate nothing.
//
//   synk::Session s(g, {.seed = 1});
//   auto train = s.function({.inputs = {x, y}, .outputs = {{loss}},
//                            .updates = opt_updates});
//   float l = train({X, Y})[0].scalar();
//   synk::Array W = s.get("W");
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "synk/array.hpp"
#include "synk/graph.hpp"

namespace synk {

// How a session's rank_sum nodes (ops.hpp) combine over the processes
// that run the same functions: out[i] = the sum over every rank of in[i],
// n floats (out may equal in), the same bits on every rank. Every rank calls
// it at the same points of the same functions. A synk::Runtime sets it to
// its ranks' all-reduce; a program with its own processes (MPI) may set it
// to theirs.
using RankSumFn = std::function<void(const float* in, float* out, size_t n)>;

struct SessionOptions {
  uint64_t seed = 0;        // variable initialisation and dropout streams
  int blas_threads = 1;     // OpenBLAS threads (CPU device)
  int rank = 0;             // mixed into dropout streams (distinct per worker)
  RankSumFn rank_sum;       // empty: this session is the only rank (rank_sum copies)
};

class Session;

// A caller-chosen dropout key for one call (Function::call_into).
struct CallKey {
  uint64_t value = 0;
};

// A compiled function; callable while its Session lives.
class Function {
 public:
  Function() = default;
  // Runs the function. Inputs in the order of FunctionSpec::inputs; their
  // shapes must match the symbolic shapes (batch resolved consistently).
  // Returns the outputs in order; updates are applied after all outputs
  // are computed.
  std::vector<Array> operator()(const std::vector<ArrayView>& inputs) const;
  // Same, but output i is written to outputs[i] (room for its numel x dtype
  // bytes at this call's batch size; must not overlap an input) instead of
  // a new Array. Values that a step computes are computed right there, with
  // no copy (e.g. gradients straight into a flat all-reduce buffer).
  void call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs) const;
  // Both, with dropout keyed by the caller: the masks then depend on the
  // session's seed and `key` alone, not on SessionOptions::rank or on how
  // many calls this session made, so any process computing the same call
  // with the same key draws the same masks (the runtime's deterministic
  // mode keys each row chunk of a batch by its call and first row).
  std::vector<Array> operator()(const std::vector<ArrayView>& inputs, CallKey key) const;
  void call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs, CallKey key) const;
  // call_into, calling ready(i) as soon as output i is final in outputs[i],
  // while the rest of the function still runs (no later step reads or
  // writes that buffer): e.g. to start sending a layer's gradient while
  // the backward pass goes on through the layers before it. Every output
  // gets exactly one ready() before the call returns, in the order they
  // are done (updates are applied after the last). An exception from
  // ready() ends the call.
  void call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                 const std::function<void(size_t)>& ready) const;
  const FunctionDef& def() const;
  int index() const { return index_; }

 private:
  friend class Session;
  Function(Session* s, int index) : s_(s), index_(index) {}
  Session* s_ = nullptr;
  int index_ = -1;
};

class Session {
 public:
  Session(const Graph& g, SessionOptions opts = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Checks the spec and makes a function (compiled on first call).
  Function function(const FunctionSpec& spec);
  // Same from the index form (deserialised functions).
  Function function(const FunctionDef& def);

  // Shared-variable values.
  Array get(const std::string& name) const;
  void set(const std::string& name, const ArrayView& value);
  // Raw storage of a variable (numel(shape) elements), for collectives.
  void* variable_data(int32_t node_id);

  const Graph& graph() const;

  // Bytes of planned scratch memory over all compiled functions (tests).
  size_t scratch_bytes() const;

  struct Impl;
 private:
  friend class Function;
  std::unique_ptr<Impl> impl_;
};

}  // namespace synk
