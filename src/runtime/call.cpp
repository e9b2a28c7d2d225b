// src/runtime/call.cpp — making functions and training steps, distribute(),
// and calling functions from the master. Every argument is checked here,
// before any worker is touched, so a bad call leaves the workers idle and
// the next call works.
#include <algorithm>

#include "runtime/core.hpp"
#include "runtime/nodes.hpp"
#include "synk/autodiff.hpp"
#include "synk/serialize.hpp"

namespace synk {

using detail::CallDesc;
using detail::CallInput;
using detail::Cmd;
using detail::Entry;
using detail::RuntimeCore;

namespace {

Graph* graph_of(const FunctionSpec& s) {
  for (const Tensor& t : s.inputs) if (t.valid()) return &t.graph();
  for (const OutputSpec& o : s.outputs) if (o.value.valid()) return &o.value.graph();
  for (const Update& u : s.updates) if (u.variable.valid()) return &u.variable.graph();
  return nullptr;
}

}  // namespace

namespace {

ParallelFunction make_function(const std::shared_ptr<RuntimeCore>& core, const FunctionSpec& spec,
                               const std::vector<Tensor>& broadcast) {
  RuntimeCore& c = *core;
  Graph* g = graph_of(spec);
  if (!g) g = c.graph;  // an empty function belongs to the runtime's graph
  if (!g) throw ArgumentError("Runtime::function '" + spec.name + "': the spec has no tensors and no graph is known yet");
  c.attach_graph(g, "function");
  FunctionDef def = make_function_def(spec);
  // An output with a batch dim holds one value per row: only gather keeps
  // its meaning whatever the rank count. Folding it element by element
  // (avg/sum/max/min/prod) or keeping one piece (none) would give a shape
  // that depends on how the rows were split.
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    const OutputSpec& o = spec.outputs[i];
    if (has_batch(o.value.shape()) && o.collect != Collect::gather)
      throw ArgumentError("Runtime::function '" + spec.name + "': output " + std::to_string(i) + " ('" +
                          o.value.name() + "', shape " + to_string(o.value.shape()) +
                          ") has a batch dim, so its collect mode must be Collect::gather (the rows of every "
                          "rank in order), not Collect::" + collect_name(o.collect) +
                          ", whose result would depend on the rank count; to combine over the rows, reduce "
                          "them in the graph (e.g. mean(v) with Collect::avg, sum(v) with Collect::sum)");
  }
  Entry e;
  e.name = spec.name;
  e.collects = def.collects;
  e.n_outputs = static_cast<uint32_t>(def.outputs.size());
  for (const Tensor& b : broadcast)
    if (std::find(spec.inputs.begin(), spec.inputs.end(), b) == spec.inputs.end())
      throw ArgumentError("Runtime::function '" + spec.name + "': broadcast tensor '" + b.name() +
                          "' is not one of its inputs");
  for (const Tensor& in : spec.inputs) {
    const bool bc = std::find(broadcast.begin(), broadcast.end(), in) != broadcast.end();
    if (!bc && (in.shape().empty() || in.shape()[0] != synk::batch))
      throw ArgumentError("Runtime::function '" + spec.name + "': input '" + in.name() + "' of shape " +
                          to_string(in.shape()) +
                          " has no batch dim first, so it cannot be scattered: list it as broadcast");
    e.broadcast.push_back(bc);
  }
  e.rank_sum = function_runs_op(*c.graph, def, Op::RankSum);
  e.fn = c.add_def(def);
  c.entries.push_back(std::move(e));
  return ParallelFunction(core, static_cast<int>(c.entries.size() - 1));
}

// After a distribute() that failed: every rank keeps (or goes back to) the
// functions of the last good one, and the functions made since are dropped,
// so a function that cannot be compiled does not make every later
// distribute() fail. Their handles are refused; the user makes them again.
// Returns the sentence for the error message.
std::string drop_undistributed(RuntimeCore& c) {
  std::string names;
  for (size_t i = c.distributed_entries; i < c.entries.size(); ++i) {
    if (c.entries[i].dropped) continue;
    c.entries[i].dropped = true;
    names += (names.empty() ? "'" : ", '") + c.entries[i].name + "'";
  }
  c.defs.resize(c.distributed_defs);
  c.distributed_entries = c.entries.size();
  c.rank->drop_functions(c.distributed_defs);
  if (names.empty()) return "";
  return "; the functions made since the last successful distribute() were dropped (" + names +
         "): make them again";
}

}  // namespace

ParallelFunction Runtime::function(const FunctionSpec& spec, const std::vector<Tensor>& broadcast) {
  RuntimeCore& c = checked("function");
  detail::Busy busy(c, "function");
  return make_function(impl_, spec, broadcast);
}

namespace {

// Ops whose every output element depends on the same element of each input
// (scalars broadcast): the ones a sharded update may apply to a slice.
bool elementwise(Op op) {
  switch (op) {
    case Op::Add: case Op::Sub: case Op::Mul: case Op::Div: case Op::Equal: case Op::Neg: case Op::Relu:
    case Op::Tanh: case Op::Sigmoid: case Op::Exp: case Op::Log: case Op::Sqrt: case Op::Square:
    case Op::PowScalar: case Op::Cast: case Op::ReluGrad: case Op::Gelu: case Op::GeluGrad: case Op::Abs:
    case Op::AbsGrad: case Op::Maximum: case Op::Minimum: case Op::MaximumGradMask: case Op::Clip:
    case Op::ClipMask: case Op::Where: case Op::Greater: case Op::Less: case Op::Sin: case Op::Cos:
      return true;
    default:
      return false;
  }
}

// A sharded training step's update (TrainSpec::shard_optimizer): the
// optimizer called once on the [S] slice variable and the [S] gradient
// input, checked to be elementwise with its state named "<slice>/<slot>"
// ([S], or scalar); fills the update, the gradient input, and the state's
// unsharded names. Throws ArgumentError for an optimizer it cannot shard.
detail::ShardLayout sharded_update(Graph& g, const TrainSpec& spec, size_t flat, uint64_t ranks, int k,
                                   std::vector<Update>& ups, std::vector<Tensor>& gin,
                                   std::vector<detail::ShardedState>& aliases) {
  const std::string who = "Runtime::train_step '" + spec.name + "' (shard_optimizer)";
  const uint64_t A = detail::kShardAlign;
  const uint64_t S = std::max<uint64_t>(1, ((flat + ranks - 1) / ranks + A - 1) / A) * A;
  std::string base = "__synk_zero1/" + spec.name + "#" + std::to_string(k);
  while (g.contains(base) || g.contains(base + "/grad")) base += "'";
  Tensor slice = g.variable(base, {static_cast<Dim>(S)}, Init::zeros());
  Tensor grad = g.input(base + "/grad", DType::f32, {static_cast<Dim>(S)});
  gin = {grad};
  ups = spec.optimizer({slice}, gin);
  const std::string prefix = base + "/";
  // Which nodes depend on a slice (the parameter, its gradient, [S]
  // state): each must be elementwise of shape [S].
  std::vector<char> sliced(static_cast<size_t>(g.size()), 0);
  sliced[static_cast<size_t>(slice.id())] = sliced[static_cast<size_t>(grad.id())] = 1;
  bool updates_slice = false;
  for (const Update& u : ups) {
    const Node& v = u.variable.node();
    if (u.variable.id() == slice.id()) {
      updates_slice = true;
      continue;
    }
    const bool named = v.name.rfind(prefix, 0) == 0 && v.name.size() > prefix.size();
    const bool shaped = v.shape.empty() || v.shape == Shape{static_cast<Dim>(S)};
    if (!named || !shaped || v.dtype != DType::f32)
      throw ArgumentError(who + ": the optimizer updates '" + v.name + "' (" + dtype_name(v.dtype) + " " +
                          to_string(v.shape) +
                          "), which is not state of its parameter: a sharded optimizer's state must be f32 variables "
                          "named '<param>/<slot>', of the parameter's shape or scalar, as synk::optim makes them");
    if (!v.shape.empty()) sliced[static_cast<size_t>(u.variable.id())] = 1;
  }
  if (!updates_slice) throw ArgumentError(who + ": the optimizer does not update its parameter");
  for (size_t id = 0; id < g.size(); ++id) {
    const Node& n = g.node(static_cast<int32_t>(id));
    if (n.op == Op::Variable || n.op == Op::Input) continue;
    bool dep = false;
    for (int32_t in : n.inputs) dep = dep || sliced[static_cast<size_t>(in)];
    if (!dep) continue;
    sliced[id] = 1;
    if (!elementwise(n.op) || n.shape != Shape{static_cast<Dim>(S)})
      throw ArgumentError(who + ": the optimizer's update is not elementwise (" + op_name(n.op) + " of shape " +
                          to_string(n.shape) +
                          " over the gradient or the parameters): each rank updates its slice alone, so "
                          "clip_by_global_norm and other ops over the whole gradient are not supported; train "
                          "without shard_optimizer");
  }
  for (const Update& u : ups)
    if (u.variable.shape().empty() && sliced[static_cast<size_t>(u.value.id())])
      throw ArgumentError(who + ": the scalar state '" + u.variable.name() + "' depends on the gradient or the parameters");
  // The state's unsharded names: "<param>/<slot>" at the param's place in
  // the flat order; a scalar one once, after the first param.
  for (const Update& u : ups) {
    if (u.variable.id() == slice.id()) continue;
    const std::string slot = u.variable.name().substr(prefix.size());
    if (u.variable.shape().empty()) {
      aliases.push_back({spec.params[0].name() + "/" + slot, u.variable.id(), 0, {}, S});
      continue;
    }
    size_t off = 0;
    for (const Tensor& p : spec.params) {
      aliases.push_back({p.name() + "/" + slot, u.variable.id(), off, p.shape(), S});
      off += static_cast<size_t>(numel(p.shape()));
    }
  }
  detail::ShardLayout L;
  for (const Tensor& p : spec.params) L.params.push_back(p.id());
  L.flat = slice.id();
  L.slice = S;
  return L;
}

}  // namespace

ParallelFunction Runtime::train_step(const TrainSpec& spec) {
  RuntimeCore& c = checked("train_step");
  detail::Busy busy(c, "train_step");
  const std::string who = "Runtime::train_step '" + spec.name + "'";
  if (!spec.loss.valid()) throw ArgumentError(who + ": no loss");
  if (spec.loss.dtype() != DType::f32 || has_batch(spec.loss.shape()) || numel(spec.loss.shape()) != 1)
    throw ArgumentError(who + ": the loss must be a scalar f32, got " + to_string(spec.loss.shape()));
  if (spec.params.empty()) throw ArgumentError(who + ": no params");
  if (!spec.optimizer) throw ArgumentError(who + ": no optimizer");
  Graph& g = spec.loss.graph();
  c.attach_graph(&g, "train_step");
  for (const Tensor& p : spec.params) {
    if (!p.valid() || &p.graph() != &g || p.node().op != Op::Variable || p.dtype() != DType::f32)
      throw ArgumentError(who + ": params must be f32 variables of the loss's graph");
  }
  std::vector<Tensor> grads = synk::grad(spec.loss, spec.params);
  std::vector<Tensor> gin;
  // Gradient inputs get names unique in the graph: a graph outlives its
  // runtimes (recovery makes the same train step again in a new runtime).
  int k = static_cast<int>(c.entries.size());
  auto tagged = [&](int t) {
    std::vector<std::string> names;
    for (const Tensor& p : spec.params) names.push_back("__synk_grad/" + p.name() + "#" + std::to_string(t));
    return names;
  };
  auto taken = [&](const std::vector<std::string>& names) {
    for (const auto& nm : names) if (g.contains(nm)) return true;
    return false;
  };
  while (taken(tagged(k))) ++k;
  size_t flat = 0;
  for (const Tensor& p : spec.params) flat += static_cast<size_t>(numel(p.shape()));
  std::vector<Update> ups;
  detail::ShardLayout shard;
  std::vector<detail::ShardedState> aliases;
  if (spec.shard_optimizer) {
    shard = sharded_update(g, spec, flat, static_cast<uint64_t>(c.world), k, ups, gin, aliases);
  } else {
    const std::vector<std::string> names = tagged(k);
    for (size_t i = 0; i < spec.params.size(); ++i) gin.push_back(g.input(names[i], DType::f32, spec.params[i].shape()));
    ups = spec.optimizer(spec.params, gin);
  }

  FunctionSpec gs{spec.name, spec.inputs, spec.outputs, {}};
  for (const Tensor& t : grads) gs.outputs.push_back({t, Collect::avg});
  // Reuse function()'s checks (graph, broadcast, batch dims) for the gradient part.
  ParallelFunction gf = make_function(impl_, gs, spec.broadcast);
  Entry& e = c.entries[static_cast<size_t>(gf.index())];
  e.n_outputs = static_cast<uint32_t>(spec.outputs.size());
  e.collects.resize(spec.outputs.size());
  e.update_fn = c.add_def(make_function_def({spec.name + "/update", gin, {}, ups}));
  e.rank_sum = e.rank_sum || function_runs_op(g, c.defs[static_cast<size_t>(e.update_fn)], Op::RankSum);
  e.flat_size = flat;
  if (shard.flat >= 0) {
    // The gradient buffer holds every rank's slice, the padding included.
    e.flat_size = static_cast<size_t>(shard.slice) * static_cast<size_t>(c.world);
    c.shard_vars.push_back(shard.flat);
    for (const detail::ShardedState& a : aliases)
      if (std::find(c.shard_vars.begin(), c.shard_vars.end(), a.var) == c.shard_vars.end()) c.shard_vars.push_back(a.var);
    c.sharded_state.insert(c.sharded_state.end(), aliases.begin(), aliases.end());
    e.shard = std::move(shard);
  }
  return gf;
}

namespace {
void distribute_impl(RuntimeCore& c, const std::vector<uint8_t>& bytes);
}  // namespace

void Runtime::distribute() {
  RuntimeCore& c = checked("distribute");
  detail::Busy busy(c, "distribute");
  if (!c.graph) throw ArgumentError("Runtime::distribute: no function was made yet");
  std::vector<uint8_t> bytes = serialize(*c.graph, c.defs);
  c.on_every_node([&] { distribute_impl(c, bytes); });
}

namespace {
void distribute_impl(RuntimeCore& c, const std::vector<uint8_t>& bytes) {
  if (c.multi()) {
    // Every node must build the same graph and functions.
    c.agree("distribute", detail::fingerprint(bytes), c.defs.size(),
            "distribute of " + std::to_string(c.defs.size()) + " functions over " + std::to_string(c.graph->size()) +
                " graph nodes");
  }
  if (c.n > 1) {
    c.set_args(bytes);
    c.signal(Cmd::distribute, false);
  }
  std::string err;
  try {
    c.rank->add_functions(c.defs);
  } catch (const std::exception& e) {
    err = e.what();
  }
  try {
    if (c.n > 1) c.wait_workers("distribute");
  } catch (const WorkerError& e) {
    if (c.failed.load()) throw;  // a worker died: the runtime is failed anyway
    throw WorkerError(e.what() + drop_undistributed(c), e.rank());
  }
  if (!err.empty()) throw Error("synk runtime: distribute failed on rank 0 (master): " + err + drop_undistributed(c));
  c.distributed_defs = c.defs.size();
  {
    std::lock_guard<std::mutex> lock(c.stall_mu);  // the stall watcher names functions
    c.fn_names.clear();
    for (const FunctionDef& d : c.defs) c.fn_names.push_back(d.name);
  }
  c.distributed_entries = c.entries.size();
  c.distributed_nodes = c.graph->size();
  if (!c.rank->has_comm()) c.join_comms();  // the first distribute of ranks joined through bootstrap bytes (NCCL)
}
}  // namespace

const std::string& ParallelFunction::name() const {
  if (!owner_) throw ArgumentError("name() of an empty synk::ParallelFunction");
  return owner_->entries.at(static_cast<size_t>(index_)).name;
}

std::vector<Array> ParallelFunction::operator()(const std::vector<Arg>& args, const CallOptions& opts) const {
  if (!owner_) throw ArgumentError("call of an empty synk::ParallelFunction");
  return owner_->on_every_node([&] { return call(args, opts); });
}

std::vector<Array> ParallelFunction::call(const std::vector<Arg>& args, const CallOptions& opts) const {
  RuntimeCore& c = *owner_;
  // Claim the runtime before reading any of its state: another thread may be
  // inside a call (that is refused here, and must not race with it).
  detail::Busy busy(c, "call of a function");
  const Entry& e = c.entries.at(static_cast<size_t>(index_));
  detail::trace::Span span(detail::trace::Kind::call, c.calls + 1, e.fn);
  // The label is for messages only: made when one is needed, not per call.
  const detail::Label what(e.name, c.calls + 1);
  auto label = [&] { return what.str(); };
  if (!c.usable()) c.check_usable("call of " + label());
  if (e.dropped)
    throw ArgumentError(label() + ": the function was dropped because the distribute() after it was made failed; "
                        "make it again and call distribute()");
  if (static_cast<size_t>(std::max(e.fn, e.update_fn)) >= c.distributed_defs)
    throw ArgumentError(label() + ": the function was made after the last distribute(); call distribute() first");
  const FunctionDef& def = c.defs[static_cast<size_t>(e.fn)];
  const Graph& g = *c.graph;

  // ---- check every argument -----------------------------------------------------
  if (args.size() != def.inputs.size())
    throw ArgumentError(label() + ": expected " + std::to_string(def.inputs.size()) + " inputs, got " +
                        std::to_string(args.size()));
  if (opts.num_slices < 1) throw ArgumentError(label() + ": num_slices must be >= 1, got " + std::to_string(opts.num_slices));
  std::vector<CallInput> ins(args.size());
  int64_t src_rows = -1;
  std::string rows_from;
  int64_t bcast_batch = -1;
  for (size_t i = 0; i < args.size(); ++i) {
    const Node& node = g.node(def.inputs[i]);
    CallInput& ci = ins[i];
    ci.scattered = !e.broadcast[i];
    if (const Data* d = args[i].data()) {
      if (!d->valid()) throw ArgumentError(label() + ": input '" + node.name + "' is an empty Data");
      auto& di = *d->impl();
      if (!detail::owns_data(c, di)) detail::refuse_data(c, di, label() + ": input '" + node.name + "'");
      ci.seg = di.id;
      ci.view = {di.dtype, di.shape, di.seg.data()};
    } else {
      ci.view = args[i].view();
      if (ci.view.data == nullptr && ci.view.numel() > 0)
        throw ArgumentError(label() + ": input '" + node.name + "' has no data");
    }
    const ArrayView& v = ci.view;
    if (v.dtype != node.dtype)
      throw TypeError(label() + ": input '" + node.name + "' has dtype " + dtype_name(v.dtype) + ", expected " +
                      dtype_name(node.dtype));
    bool ok = v.shape.size() == node.shape.size();
    for (size_t k = 0; ok && k < v.shape.size(); ++k)
      ok = v.shape[k] >= 0 && (node.shape[k] == synk::batch || node.shape[k] == v.shape[k]);
    if (!ok)
      throw ShapeError(label() + ": input '" + node.name + "' has shape " + to_string(v.shape) + ", expected " +
                       to_string(node.shape));
    if (ci.scattered) {
      if (src_rows >= 0 && v.shape[0] != src_rows)
        throw ShapeError(label() + ": scattered input '" + node.name + "' has " + std::to_string(v.shape[0]) +
                         " rows but '" + rows_from + "' has " + std::to_string(src_rows));
      src_rows = v.shape[0];
      rows_from = node.name;
    } else {
      for (size_t k = 0; k < node.shape.size(); ++k)
        if (node.shape[k] == synk::batch) bcast_batch = v.shape[k];
    }
  }
  int64_t total = -1;
  std::span<const int64_t> indices;
  if (src_rows >= 0) {
    switch (opts.batch.kind()) {
      case Batch::Kind::all: total = src_rows; break;
      case Batch::Kind::range: {
        const Range r = opts.batch.range();
        if (r.begin < 0 || r.end < r.begin || r.end > src_rows)
          throw ArgumentError(label() + ": batch range [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                              ") is outside the " + std::to_string(src_rows) + " rows of the inputs");
        total = r.end - r.begin;
        break;
      }
      case Batch::Kind::indices: {
        indices = opts.batch.indices();
        for (size_t k = 0; k < indices.size(); ++k)
          if (indices[k] < 0 || indices[k] >= src_rows)
            throw ArgumentError(label() + ": batch index " + std::to_string(indices[k]) + " (position " +
                                std::to_string(k) + ") is outside the " + std::to_string(src_rows) +
                                " rows of the inputs");
        total = static_cast<int64_t>(indices.size());
        break;
      }
    }
    if (total == 0) throw ArgumentError(label() + ": the call selects no rows");
  } else if (opts.batch.kind() != Batch::Kind::all) {
    throw ArgumentError(label() + ": a batch was given but no input is scattered");
  }

  // Deterministic mode: fixed row chunks (as many as the batch has rows, at
  // most RuntimeOptions::deterministic_chunks), each rank's chunks in turn.
  const uint32_t chunks = !c.opts.deterministic ? 0
                          : total < 0          ? 1
                                               : static_cast<uint32_t>(std::min<int64_t>(total, c.opts.deterministic_chunks));
  // Result space per rank (outputs with a batch dim are gathered: refused
  // otherwise when the function was made).
  std::vector<int64_t> rank_rows(static_cast<size_t>(c.n), 1), rank_pieces(static_cast<size_t>(c.n), 1);
  if (total >= 0) {
    for (int r = 0; r < c.n; ++r) {
      const detail::RankShare s = detail::rank_share(total, c.world, c.base + r, chunks);
      rank_rows[static_cast<size_t>(r)] = s.rows;
      rank_pieces[static_cast<size_t>(r)] =
          chunks > 0 ? s.n_chunks : std::max<int64_t>(1, std::min<int64_t>(opts.num_slices, s.rows));
    }
  }

  // rank_sum steps are collectives inside the function: every rank must run
  // the function exactly once (with rows, one slice, no chunks), or the
  // ranks that run it more or not at all would pair their collectives
  // wrongly or wait for ever. Decided from what every node knows alike.
  if (e.rank_sum && c.world > 1) {
    const char* why = c.opts.deterministic ? "the deterministic mode runs each rank's row chunks one by one"
                      : opts.num_slices > 1 ? "num_slices > 1 runs a rank's slices one by one"
                      : total >= 0 && total < c.world ? "the batch has fewer rows than there are ranks"
                      // A training step weights unequal shares' gradients by
                      // their rows after the backward pass; the gradient
                      // rank_sum carries between ranks would need the
                      // weights before it.
                      : e.update_fn >= 0 && total >= 0 && total % c.world != 0
                          ? "a training step's batch must split evenly over the ranks"
                          : nullptr;
    if (why)
      throw ArgumentError(label() + ": the function combines values across ranks mid-way (rank_sum, batch_norm "
                          "with sync), so every rank must run it exactly once per call, but " + why +
                          " (" + std::to_string(c.world) + " ranks" +
                          (total >= 0 ? ", " + std::to_string(total) + " rows" : std::string()) + ")");
  }

  // ---- run -------------------------------------------------------------------------
  // Several nodes: every node must be at this same call (else its
  // collectives would pair with another call's).
  if (c.multi())
    c.agree("call", static_cast<uint64_t>(e.fn) | (static_cast<uint64_t>(e.update_fn + 1) << 32),
            static_cast<uint64_t>(total) * 1000003u + static_cast<uint64_t>(opts.num_slices) * 7919u,
            label() + (total >= 0 ? " (" + std::to_string(total) + " rows)" : ""));
  detail::trace::Span send(detail::trace::Kind::send, c.calls + 1, e.fn);
  ++c.calls;
  CallDesc d;
  d.fn = static_cast<uint32_t>(e.fn);
  d.update_fn = e.update_fn;
  d.num_slices = static_cast<uint32_t>(opts.num_slices);
  d.chunks = chunks;
  d.total = total;
  d.batch = total >= 0 ? opts.batch.kind() : Batch::Kind::all;
  d.range_begin = d.batch == Batch::Kind::range ? opts.batch.range().begin : 0;
  d.collects = e.collects;
  d.call_no = c.calls;
  d.name = e.name;
  d.n_outputs = e.n_outputs;
  d.shard_params = e.shard.params;
  d.shard_flat = e.shard.flat;
  d.shard_slice = e.shard.slice;
  const bool train = e.update_fn >= 0;
  if (c.n > 1) {
    for (int r = 1; r < c.n; ++r) {
      const int64_t b = total >= 0 ? rank_rows[static_cast<size_t>(r)] : std::max<int64_t>(bcast_batch, 0);
      // The rank's pieces (slices, or chunks): a gathered output without a
      // batch dim stacks one value per piece, and so does every output
      // without one in a chunked call.
      const int64_t slices = total >= 0 ? rank_pieces[static_cast<size_t>(r)] : 1;
      size_t need = detail::result_bytes({});
      for (uint32_t i = 0; i < e.n_outputs; ++i) {
        const Node& o = g.node(def.outputs[i]);
        const bool stacked = (e.collects[i] == Collect::gather || d.chunked()) && !has_batch(o.shape);
        int64_t elems = stacked ? slices : 1;
        for (Dim x : o.shape) elems *= x == synk::batch ? b : x;
        need += detail::result_out_bytes(o.dtype, o.shape.size() + (stacked ? 1 : 0), elems);
      }
      c.ensure_result(r, need);
    }
    // CPU ranks of one node: the gradients live in shared memory, where the
    // all-reduce reads every rank's directly (CpuGroup::all_reduce_peers).
    if (train && c.device == Device::cpu && !c.multi() && !detail::test_hooks().no_shared_grads) c.ensure_shared_grads(e.flat_size);
    c.set_args(detail::encode_call(d, ins, indices));
    c.signal(Cmd::call, train);
  }
  send.end();
  detail::ShareResult mine;
  std::string err;
  try {
    // The master runs its share from what it already has: its own command
    // is not decoded again (the workers check theirs, decode_call).
    d.indices = indices.empty() ? nullptr : indices.data();
    for (const CallInput& ci : ins) {
      detail::InputDesc x;
      x.scattered = ci.scattered;
      x.dtype = ci.view.dtype;
      x.shape = ci.view.shape;
      x.base = static_cast<const uint8_t*>(ci.view.data);
      if (ci.seg) {
        x.seg = ci.seg;
        x.seg_bytes = c.seg_ptr.at(ci.seg).size();
      }
      d.inputs.push_back(std::move(x));
    }
    mine = c.rank->run_share(d);
  } catch (const std::exception& ex) {
    if (c.failed.load()) c.throw_failure(label());
    err = ex.what();
    // Either the master failed (then the workers are stuck in the
    // all-reduce) or a worker aborted the group: the runtime fails.
    if (train && c.world > 1) c.fail_collective(label(), err);
  }
  if (c.n > 1) {
    detail::trace::Span wait(detail::trace::Kind::wait_ranks, c.calls, e.fn);
    c.wait_workers(what);
  }
  if (!err.empty()) throw Error("synk runtime: " + label() + " failed on rank 0 (master): " + err);
  detail::trace::Span combining(detail::trace::Kind::combine, c.calls, e.fn);

  std::vector<detail::ResultView> views(static_cast<size_t>(c.n));
  views[0].ran = mine.ran;
  views[0].rows = mine.rows;
  for (const Array& a : mine.outs) views[0].outs.push_back(a.view());
  for (int r = 1; r < c.n; ++r)
    views[static_cast<size_t>(r)] = detail::read_result(static_cast<const uint8_t*>(c.results[static_cast<size_t>(r)].data()),
                                                        c.results[static_cast<size_t>(r)].size());
  std::vector<uint8_t> from_nodes;
  if (c.multi()) views = detail::exchange_results(c, views, from_nodes, label());
  std::vector<int64_t> chunk_rows;
  if (d.chunked())
    for (uint32_t k = 0; k < chunks; ++k)
      chunk_rows.push_back(detail::chunk_start(total, chunks, k + 1) - detail::chunk_start(total, chunks, k));
  return detail::combine(views, e.collects, e.name, chunk_rows);
}

}  // namespace synk
