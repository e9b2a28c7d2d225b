// src/runtime/collectives.cpp — collectives on shared variables (every rank's
// copy, moved by the CpuGroup in shared memory or by NCCL on the GPUs),
// get/set of one rank's value.
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "comm/futex.hpp"
#include "runtime/core.hpp"
#include "runtime/nodes.hpp"

namespace synk {

using detail::Cmd;
using detail::RuntimeCore;
using detail::VarOpKind;


namespace {

using detail::VarOp;

// Runs variable collectives on every rank; returns the master's gather output.
std::vector<uint8_t> run_ops(RuntimeCore& c, const std::vector<VarOp>& ops, const std::vector<uint8_t>& extra,
                             size_t out_bytes, const char* what) {
  const std::vector<uint8_t> args_bytes = detail::encode_var_ops(ops, extra);
  std::vector<uint8_t> out(out_bytes);
  if (c.multi()) {
    // The same collectives on every node: the encoded ops, not scatter's
    // values. (Not the call number: get/set count calls on the node that
    // holds the rank only.)
    c.agree("collective", detail::fingerprint({args_bytes.data(), detail::var_ops_bytes(ops.size())}), ops.size(),
            what);
  }
  ++c.calls;
  const std::string label = std::string(what) + " #" + std::to_string(c.calls);
  if (c.n > 1) {
    c.set_args(args_bytes);
    c.signal(Cmd::collective, true);
  }
  const uint8_t* args = c.n > 1 ? static_cast<const uint8_t*>(c.args.data()) : args_bytes.data();
  try {
    c.rank->run_var_ops(args, args_bytes.size(), out.data());
  } catch (const std::exception& e) {
    // The group is unusable after any error in it: the runtime fails.
    if (c.failed.load()) c.throw_failure(label);
    c.fail_collective(label, e.what());
  }
  if (c.n > 1) c.wait_workers(label);
  return out;
}

void check_root(RuntimeCore& c, int root, const char* what) {
  if (root < 0 || root >= c.world)
    throw ArgumentError(std::string("Runtime::") + what + ": root " + std::to_string(root) + " out of range [0, " +
                        std::to_string(c.world) + ")");
}

void check_distributed(RuntimeCore& c, const char* what) {
  if (c.distributed_defs == 0)
    throw ArgumentError(std::string("Runtime::") + what + ": call distribute() first");
}

void check_op(ReduceOp op, const char* what) {
  if (static_cast<uint8_t>(op) > static_cast<uint8_t>(ReduceOp::prod))
    throw ArgumentError(std::string("Runtime::") + what + ": reduce op " + std::to_string(static_cast<int>(op)) +
                        " is not a synk::ReduceOp (sum, avg, max, min, prod)");
}

// One op per listed variable, each variable at most once (a variable listed
// twice would be reduced twice).
std::vector<VarOp> var_ops(RuntimeCore& c, const std::vector<VarRef>& vars, VarOpKind kind, ReduceOp op, int root,
                           const char* what) {
  std::vector<VarOp> ops;
  for (const VarRef& v : vars) {
    const int32_t id = c.var_id(v, what);
    for (const VarOp& o : ops)
      if (o.var == id)
        throw ArgumentError(std::string("Runtime::") + what + ": variable '" + c.graph->node(id).name +
                            "' is listed twice");
    ops.push_back({kind, op, root, id});
  }
  return ops;
}

size_t var_bytes(RuntimeCore& c, int32_t id) {
  const Node& n = c.graph->node(id);
  return static_cast<size_t>(numel(n.shape)) * dtype_size(n.dtype);
}

}  // namespace

void Runtime::broadcast(const std::vector<VarRef>& vars, int root) {
  RuntimeCore& c = checked("broadcast");
  detail::Busy busy(c, "broadcast");
  check_distributed(c, "broadcast");
  check_root(c, root, "broadcast");
  c.on_every_node([&] { run_ops(c, var_ops(c, vars, VarOpKind::broadcast, ReduceOp::sum, root, "broadcast"), {}, 0, "broadcast"); });
}

void Runtime::all_reduce(const std::vector<VarRef>& vars, ReduceOp op) {
  RuntimeCore& c = checked("all_reduce");
  detail::Busy busy(c, "all_reduce");
  check_distributed(c, "all_reduce");
  check_op(op, "all_reduce");
  c.on_every_node([&] { run_ops(c, var_ops(c, vars, VarOpKind::all_reduce, op, 0, "all_reduce"), {}, 0, "all_reduce"); });
}

void Runtime::reduce(const std::vector<VarRef>& vars, ReduceOp op, int root) {
  RuntimeCore& c = checked("reduce");
  detail::Busy busy(c, "reduce");
  check_distributed(c, "reduce");
  check_root(c, root, "reduce");
  check_op(op, "reduce");
  c.on_every_node([&] { run_ops(c, var_ops(c, vars, VarOpKind::reduce, op, root, "reduce"), {}, 0, "reduce"); });
}

namespace {
Array gather_impl(RuntimeCore& c, const VarRef& var, VarOpKind kind, const char* what) {
  check_distributed(c, what);
  const int32_t id = c.var_id(var, what);
  const Node& n = c.graph->node(id);
  Shape s = n.shape;
  s.insert(s.begin(), c.world);
  // Several nodes: every node's master returns the values, so every rank
  // receives them (a gather reaches only global rank 0).
  if (c.multi()) kind = VarOpKind::all_gather;
  std::vector<uint8_t> out = c.on_every_node(
      [&] { return run_ops(c, {{kind, ReduceOp::sum, 0, id}}, {}, var_bytes(c, id) * static_cast<size_t>(c.world), what); });
  Array a(n.dtype, s);
  if (a.nbytes()) std::memcpy(a.raw(), out.data(), a.nbytes());
  return a;
}
}  // namespace

namespace {

// Sharded optimizer state (TrainSpec::shard_optimizer, RuntimeCore::
// sharded_state): the flat state variable gathered whole (every rank's
// slice in rank order), a name's part of it, and the whole scattered back.
std::vector<float> gather_flat(RuntimeCore& c, int32_t var, const char* what) {
  return gather_impl(c, VarRef(Tensor(c.graph, var)), VarOpKind::gather, what).to_vector<float>();
}

Array part_of(const detail::ShardedState& s, const std::vector<float>& flat) {
  Array a(DType::f32, s.shape);
  if (a.nbytes()) std::memcpy(a.raw(), flat.data() + s.offset, a.nbytes());
  return a;
}

void scatter_flat(RuntimeCore& c, int32_t var, const std::vector<float>& flat) {
  std::vector<uint8_t> extra(flat.size() * sizeof(float));
  if (!extra.empty()) std::memcpy(extra.data(), flat.data(), extra.size());
  c.on_every_node([&] { run_ops(c, {{VarOpKind::scatter, ReduceOp::sum, 0, var, 0}}, extra, 0, "scatter"); });
}

// The sharded state a VarRef names (null: an ordinary variable).
const detail::ShardedState* sharded_ref(const RuntimeCore& c, const VarRef& v) {
  return v.tensor().valid() ? nullptr : c.sharded(v.name());
}

void check_value(const detail::ShardedState& s, const ArrayView& value, const char* what) {
  if (value.dtype != DType::f32 || value.shape != s.shape)
    throw ShapeError(std::string("Runtime::") + what + ": '" + s.name + "' is f32 " + to_string(s.shape) + ", the value " +
                     dtype_name(value.dtype) + " " + to_string(value.shape));
  if (numel(s.shape) && !value.data) throw ArgumentError(std::string("Runtime::") + what + ": the value has no data");
}

}  // namespace

Array Runtime::gather(const VarRef& var) {
  RuntimeCore& c = checked("gather");
  detail::Busy busy(c, "gather");
  return gather_impl(c, var, VarOpKind::gather, "gather");
}
Array Runtime::all_gather(const VarRef& var) {
  RuntimeCore& c = checked("all_gather");
  detail::Busy busy(c, "all_gather");
  return gather_impl(c, var, VarOpKind::all_gather, "all_gather");
}

void Runtime::scatter(const VarRef& var, const ArrayView& values) {
  RuntimeCore& c = checked("scatter");
  detail::Busy busy(c, "scatter");
  check_distributed(c, "scatter");
  const int32_t id = c.var_id(var, "scatter");
  const Node& n = c.graph->node(id);
  Shape want = n.shape;
  want.insert(want.begin(), c.world);
  if (values.dtype != n.dtype)
    throw TypeError("Runtime::scatter: '" + n.name + "' has dtype " + dtype_name(n.dtype) + ", values " +
                    dtype_name(values.dtype));
  if (values.shape != want)
    throw ShapeError("Runtime::scatter: values for '" + n.name + "' must have shape " + to_string(want) + ", got " +
                     to_string(values.shape));
  std::vector<uint8_t> extra(var_bytes(c, id) * static_cast<size_t>(c.world));
  if (!extra.empty()) std::memcpy(extra.data(), values.data, extra.size());
  c.on_every_node([&] { run_ops(c, {{VarOpKind::scatter, ReduceOp::sum, 0, id, 0}}, extra, 0, "scatter"); });
}

Array Runtime::get(const VarRef& var, int rank) {
  RuntimeCore& c = checked("get");
  detail::Busy busy(c, "get");
  check_distributed(c, "get");
  check_root(c, rank, "get");
  // Sharded optimizer state: every rank's slices make the one value, the
  // same whichever rank is asked (as the unsharded state, which every rank
  // holds alike).
  if (const detail::ShardedState* s = sharded_ref(c, var); s && !s->scalar())
    return part_of(*s, gather_flat(c, s->var, "get"));
  const int32_t id = c.var_id(sharded_ref(c, var) ? VarRef(Tensor(c.graph, sharded_ref(c, var)->var)) : var, "get");
  const Node& n = c.graph->node(id);
  return c.on_every_node([&] {
    Array a(n.dtype, n.shape);
    // Several nodes: the rank's node reads it and sends it to the others.
    const int owner = c.node_of(rank);
    c.agree("get", static_cast<uint64_t>(id), static_cast<uint64_t>(rank), "get of '" + n.name + "'");
    const int local = rank - c.base;
    if (owner == c.node && local == 0) {
      c.rank->read_variable(id, a.raw(), a.nbytes());
    } else if (owner == c.node) {
      c.ensure_result(local, detail::var_value_result_bytes(a.nbytes()));
      ++c.calls;
      c.set_args(detail::encode_var_get(local, id));
      c.signal(Cmd::var_get, false);
      c.wait_workers("get");
      const auto& res = c.results[static_cast<size_t>(local)];
      const uint8_t* value = detail::read_var_value(static_cast<const uint8_t*>(res.data()), res.size(), a.nbytes());
      if (a.nbytes()) std::memcpy(a.raw(), value, a.nbytes());
    }
    if (c.multi()) c.over_link("get", [&] { c.link->broadcast(a.raw(), a.nbytes(), owner, "get"); });
    return a;
  });
}

namespace {
void set_impl(RuntimeCore& c, const VarRef& var, const ArrayView& value, int rank) {
  check_distributed(c, "set");
  if (const detail::ShardedState* s = sharded_ref(c, var)) {
    if (s->scalar()) return set_impl(c, VarRef(Tensor(c.graph, s->var)), value, rank);
    if (rank >= 0)
      throw ArgumentError("Runtime::set: '" + s->name + "' is optimizer state sharded over the ranks (one copy in all): "
                          "set it on every rank (set without a rank)");
    check_value(*s, value, "set");
    std::vector<float> flat = gather_flat(c, s->var, "set");
    if (numel(s->shape)) std::memcpy(flat.data() + s->offset, value.data, static_cast<size_t>(numel(s->shape)) * sizeof(float));
    scatter_flat(c, s->var, flat);
    return;
  }
  const int32_t id = c.var_id(var, "set");
  const Node& n = c.graph->node(id);
  if (value.dtype != n.dtype)
    throw TypeError("Runtime::set: '" + n.name + "' has dtype " + dtype_name(n.dtype) + ", value " + dtype_name(value.dtype));
  if (value.shape != n.shape)
    throw ShapeError("Runtime::set: '" + n.name + "' has shape " + to_string(n.shape) + ", value " + to_string(value.shape));
  const size_t nb = var_bytes(c, id);
  if (nb && !value.data) throw ArgumentError("Runtime::set: the value has no data");
  c.agree("set", static_cast<uint64_t>(id), static_cast<uint64_t>(rank + 1), "set of '" + n.name + "'");
  // Global rank -> this node's local rank (-1: every rank); another
  // node's rank: nothing to do here.
  if (rank >= 0) {
    if (c.node_of(rank) != c.node) return;
    rank -= c.base;
  }
  if (rank <= 0 && nb) c.rank->write_variable(id, value.data, nb);
  if (rank == 0 || c.n == 1) return;
  ++c.calls;
  c.set_args(detail::encode_var_set(rank, id, value.data, nb));
  c.signal(Cmd::var_set, false);
  c.wait_workers("set");
}
}  // namespace

void Runtime::set(const VarRef& var, const ArrayView& value, int rank) {
  RuntimeCore& c = checked("set");
  detail::Busy busy(c, "set");
  check_root(c, rank, "set");
  c.on_every_node([&] { set_impl(c, var, value, rank); });
}

void Runtime::set(const VarRef& var, const ArrayView& value) {
  RuntimeCore& c = checked("set");
  detail::Busy busy(c, "set");
  c.on_every_node([&] { set_impl(c, var, value, -1); });
}

// ---- recovery --------------------------------------------------------------------------

VarValues Runtime::snapshot() const {
  // Not checked(): a failed runtime is exactly where a snapshot is wanted.
  if (!impl_ || !impl_->open) throw ArgumentError("Runtime::snapshot: the runtime is not open (take it before close())");
  RuntimeCore& c = *impl_;
  if (::getpid() != c.master_pid) throw ArgumentError("Runtime::snapshot: called in a worker process");
  detail::Busy busy(c, "snapshot");
  VarValues out;
  if (!c.graph || !c.rank || !c.rank->ready()) return out;
  // Sharded optimizer state goes under its unsharded names, gathered from
  // every rank (not on a failed runtime: its collectives cannot run, so the
  // state is left out there); the flat variables themselves are left out.
  auto hidden = [&](const Node& n, int32_t id) {
    return std::find(c.shard_vars.begin(), c.shard_vars.end(), id) != c.shard_vars.end() || c.sharded(n.name);
  };
  for (size_t id = 0; id < c.distributed_nodes; ++id) {
    const Node& n = c.graph->node(static_cast<int32_t>(id));
    if (n.op != Op::Variable || hidden(n, static_cast<int32_t>(id))) continue;
    Array a(n.dtype, n.shape);
    c.rank->read_variable(static_cast<int32_t>(id), a.raw(), a.nbytes());
    out.emplace_back(n.name, std::move(a));
  }
  if (c.failed.load()) return out;
  std::vector<std::pair<int32_t, std::vector<float>>> flats;
  for (size_t i = 0; i < c.sharded_state.size(); ++i) {
    const detail::ShardedState& s = c.sharded_state[i];
    if (c.sharded(s.name) != &s || static_cast<size_t>(s.var) >= c.distributed_nodes) continue;  // shadowed, or not distributed
    if (s.scalar()) {
      Array a(DType::f32, {});
      c.rank->read_variable(s.var, a.raw(), a.nbytes());
      out.emplace_back(s.name, std::move(a));
      continue;
    }
    auto it = std::find_if(flats.begin(), flats.end(), [&](const auto& f) { return f.first == s.var; });
    if (it == flats.end()) {
      flats.emplace_back(s.var, gather_flat(c, s.var, "snapshot"));
      it = flats.end() - 1;
    }
    out.emplace_back(s.name, part_of(s, it->second));
  }
  return out;
}

void Runtime::restore(const VarValues& values) {
  RuntimeCore& c = checked("restore");
  detail::Busy busy(c, "restore");
  check_distributed(c, "restore");
  // Every value is checked before any rank is touched.
  std::vector<int32_t> ids;
  std::vector<std::string> sharded_names;
  for (const auto& [name, value] : values) {
    if (const detail::ShardedState* s = c.sharded(name)) {
      if (std::find(sharded_names.begin(), sharded_names.end(), name) != sharded_names.end())
        throw ArgumentError("Runtime::restore: variable '" + name + "' is listed twice");
      check_value(*s, value.view(), "restore");
      sharded_names.push_back(name);
      continue;
    }
    const int32_t id = c.var_id(VarRef(name), "restore");
    if (std::find(ids.begin(), ids.end(), id) != ids.end())
      throw ArgumentError("Runtime::restore: variable '" + name + "' is listed twice");
    const Node& n = c.graph->node(id);
    if (value.dtype() != n.dtype || value.shape() != n.shape)
      throw ShapeError("Runtime::restore: '" + name + "' is " + dtype_name(n.dtype) + " " + to_string(n.shape) +
                       ", the saved value " + dtype_name(value.dtype()) + " " + to_string(value.shape()));
    ids.push_back(id);
  }
  // Sharded state: each flat variable gathered once, its names' values
  // written in, scattered once.
  std::vector<std::pair<int32_t, std::vector<float>>> flats;
  for (const auto& [name, value] : values) {
    const detail::ShardedState* s = c.sharded(name);
    if (!s || s->scalar()) continue;
    auto it = std::find_if(flats.begin(), flats.end(), [&](const auto& f) { return f.first == s->var; });
    if (it == flats.end()) {
      flats.emplace_back(s->var, gather_flat(c, s->var, "restore"));
      it = flats.end() - 1;
    }
    if (numel(s->shape)) std::memcpy(it->second.data() + s->offset, value.raw(), value.nbytes());
  }
  for (const auto& [var, flat] : flats) scatter_flat(c, var, flat);
  c.on_every_node([&] {
    for (size_t i = 0; i < values.size(); ++i) {
      const detail::ShardedState* s = c.sharded(values[i].first);
      if (s && !s->scalar()) continue;
      set_impl(c, VarRef(values[i].first), values[i].second.view(), -1);
    }
  });
}

}  // namespace synk
