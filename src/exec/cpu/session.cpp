// exec/cpu/session.cpp — synk::Session and synk::Function on the CPU executor.
//
// A Session owns the variables' storage (allocated and initialised once) and
// one scratch arena shared by all its compiled plans: calls are sequential,
// so every plan can use the same memory, sized to the largest. Plans are
// compiled lazily per (function, batch size) and cached.
#include <cstdlib>
#include <cstring>
#include <map>
#include <unordered_map>

#include <cblas.h>

#include "exec/cpu/executor.hpp"
#include "exec/common.hpp"
#include "exec/variables.hpp"
#include "synk/error.hpp"
#include "synk/session.hpp"

namespace synk {

namespace {

struct FunctionState {
  FunctionDef def;
  // By (batch size (-1: no batch dim), outputs into caller buffers).
  std::map<std::pair<int64_t, bool>, plan::Plan> plans;
  // Updates whose value lives in a variable that another update overwrites:
  // staged through the arena before any variable is written.
  std::map<std::pair<int64_t, bool>, std::vector<int64_t>> staging;  // arena offset per copy (-1: none)
  // Per plan: after which step each output is final (cpu::output_ready_steps).
  std::map<std::pair<int64_t, bool>, std::vector<int64_t>> ready_steps;
};

struct FreeBytes {
  void operator()(uint8_t* p) const { std::free(p); }
};

using exec::fn_label;

}  // namespace

struct Session::Impl {
  const Graph* g = nullptr;
  SessionOptions opts;
  exec::VariableTable<Array> vars;
  std::vector<FunctionState> fns;
  std::unique_ptr<uint8_t, FreeBytes> arena;
  int64_t arena_bytes = 0;
  uint64_t calls = 0;

  // Allocates and initialises variables added to the graph since last time.
  void ensure_variables() {
    vars.scan(
        *g, [&](const Node& n, int32_t id) { return exec::initial_array(n, id, opts.seed); },
        [](Array& a) { return a.raw(); });
  }

  int32_t find_variable(const std::string& name, const char* who) {
    ensure_variables();
    return vars.find(name, who);
  }

  void reserve_arena(int64_t bytes) {
    if (bytes <= arena_bytes) return;
    const size_t size = static_cast<size_t>((bytes + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, size);
    if (!p) throw BackendError("Session: cannot allocate " + std::to_string(size) + " bytes of scratch memory");
    arena.reset(static_cast<uint8_t*>(p));
    arena_bytes = static_cast<int64_t>(size);
  }

  // into: the caller's output buffers (call_into), or null to return arrays;
  // key: the caller's dropout key, or null for (rank, call count).
  // ready: called with each output's index once it is final (call_into).
  std::vector<Array> call(int index, const std::vector<ArrayView>& inputs, void* const* into = nullptr,
                          const CallKey* dropout_key = nullptr, const std::function<void(size_t)>* ready = nullptr);
};

std::vector<Array> Session::Impl::call(int index, const std::vector<ArrayView>& inputs, void* const* into,
                                       const CallKey* dropout_key, const std::function<void(size_t)>* ready) {
  FunctionState& f = fns.at(static_cast<size_t>(index));
  const FunctionDef& def = f.def;
  const auto& nodes = g->nodes();

  // ---- check the inputs and find the batch size ----------------------------------
  const int64_t b = exec::check_inputs(nodes, def, inputs);

  // ---- plan for this batch size ------------------------------------------------------
  const std::pair<int64_t, bool> key{b, into != nullptr};
  auto it = f.plans.find(key);
  if (it == f.plans.end()) {
    plan::CompileOptions copts = cpu::cpu_session_options();
    copts.outputs_external = into != nullptr;
    plan::Plan plan = plan::compile(nodes, def, b, copts);
    int64_t top = plan.arena_bytes;
    std::vector<int64_t> stage = plan::stage_updates(plan, nodes, top, 64);
    plan.arena_bytes = top;
    reserve_arena(plan.arena_bytes);
    f.staging[key] = std::move(stage);
    it = f.plans.emplace(key, std::move(plan)).first;
  }
  plan::Plan& plan = it->second;
  if (into)
    for (size_t k = 0; k < plan.outputs.size(); ++k)
      if (!into[k] && numel(plan.shapes[static_cast<size_t>(plan.outputs[k])]) > 0)
        throw ArgumentError(fn_label(def) + ": call_into: output buffer " + std::to_string(k) + " is null");

  // ---- run ------------------------------------------------------------------------
  cpu::RunContext ctx;
  ctx.function = &def.name;
  ctx.seed = opts.seed;
  ctx.rank = dropout_key ? 0 : opts.rank;
  ctx.call = calls++;
  if (dropout_key) ctx.call = dropout_key->value;
  ctx.rank_sum = &opts.rank_sum;
  if (ready) {
    // Outputs final before the end are handed over from the step that
    // last touches them; the others after the copies below.
    auto rs = f.ready_steps.find(key);
    if (rs == f.ready_steps.end()) rs = f.ready_steps.emplace(key, cpu::output_ready_steps(plan)).first;
    const std::vector<int64_t>& at = rs->second;
    std::vector<std::vector<size_t>> by_step(plan.steps.size());
    for (size_t k = 0; k < at.size(); ++k)
      if (at[k] >= 0) by_step[static_cast<size_t>(at[k])].push_back(k);
    const std::function<void(size_t)> after = [&](size_t step) {
      for (size_t k : by_step[step]) (*ready)(k);
    };
    cpu::execute(plan, nodes, arena.get(), inputs, vars.ptrs(), ctx, into, &after);
  } else {
    cpu::execute(plan, nodes, arena.get(), inputs, vars.ptrs(), ctx, into);
  }

  std::vector<Array> outs;
  if (into) {
    // Outputs the plan did not compute in place (inputs, variables, values
    // shared with another output or an update) are copied.
    for (size_t k = 0; k < plan.outputs.size(); ++k) {
      const int32_t id = plan.outputs[k];
      const plan::ValueLoc& l = plan.loc[static_cast<size_t>(id)];
      if (l.kind == plan::Loc::Output && l.index == static_cast<int32_t>(k)) continue;
      const size_t bytes = static_cast<size_t>(plan.bytes(id));
      if (bytes > 0) std::memmove(into[k], plan.ptr[static_cast<size_t>(id)], bytes);
    }
    if (ready) {
      const std::vector<int64_t>& at = f.ready_steps.at(key);
      for (size_t k = 0; k < at.size(); ++k)
        if (at[k] < 0) (*ready)(k);
    }
  }
  if (!into) outs.reserve(plan.outputs.size());
  for (int32_t id : into ? std::vector<int32_t>{} : plan.outputs) {
    Array a(nodes[static_cast<size_t>(id)].dtype, plan.shapes[static_cast<size_t>(id)]);
    if (a.nbytes() > 0) std::memcpy(a.raw(), plan.ptr[static_cast<size_t>(id)], a.nbytes());
    outs.push_back(std::move(a));
  }

  // Updates last (plan/plan.hpp: staged values first, then the copies).
  plan::apply_updates(plan, nodes, f.staging[key], arena.get(), vars.ptrs(),
                      [](void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); });
  return outs;
}

// ---- Function ----------------------------------------------------------------------

std::vector<Array> Function::operator()(const std::vector<ArrayView>& inputs) const {
  if (!s_) throw ArgumentError("call of an empty synk::Function");
  return s_->impl_->call(index_, inputs);
}

void Function::call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs) const {
  if (!s_) throw ArgumentError("call_into of an empty synk::Function");
  const FunctionDef& d = def();
  if (outputs.size() != d.outputs.size())
    throw ArgumentError(fn_label(d) + ": call_into got " + std::to_string(outputs.size()) + " output buffers for " +
                        std::to_string(d.outputs.size()) + " outputs");
  s_->impl_->call(index_, inputs, outputs.data());
}

std::vector<Array> Function::operator()(const std::vector<ArrayView>& inputs, CallKey key) const {
  if (!s_) throw ArgumentError("call of an empty synk::Function");
  return s_->impl_->call(index_, inputs, nullptr, &key);
}

void Function::call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs, CallKey key) const {
  if (!s_) throw ArgumentError("call_into of an empty synk::Function");
  const FunctionDef& d = def();
  if (outputs.size() != d.outputs.size())
    throw ArgumentError(fn_label(d) + ": call_into got " + std::to_string(outputs.size()) + " output buffers for " +
                        std::to_string(d.outputs.size()) + " outputs");
  s_->impl_->call(index_, inputs, outputs.data(), &key);
}

void Function::call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                         const std::function<void(size_t)>& ready) const {
  if (!s_) throw ArgumentError("call_into of an empty synk::Function");
  const FunctionDef& d = def();
  if (outputs.size() != d.outputs.size())
    throw ArgumentError(fn_label(d) + ": call_into got " + std::to_string(outputs.size()) + " output buffers for " +
                        std::to_string(d.outputs.size()) + " outputs");
  s_->impl_->call(index_, inputs, outputs.data(), nullptr, &ready);
}

const FunctionDef& Function::def() const {
  if (!s_) throw ArgumentError("def() of an empty synk::Function");
  return s_->impl_->fns.at(static_cast<size_t>(index_)).def;
}

// ---- Session ------------------------------------------------------------------------

Session::Session(const Graph& g, SessionOptions opts) : impl_(std::make_unique<Impl>()) {
  if (opts.blas_threads < 1) throw ArgumentError("SessionOptions::blas_threads must be >= 1");
  impl_->g = &g;
  impl_->opts = opts;
  openblas_set_num_threads(opts.blas_threads);
  impl_->ensure_variables();
}

Session::~Session() = default;

Function Session::function(const FunctionSpec& spec) {
  exec::check_spec_graph(spec, *impl_->g);
  return function(make_function_def(spec));
}

Function Session::function(const FunctionDef& def) {
  validate_function_def(impl_->g->nodes(), def);
  impl_->ensure_variables();
  impl_->fns.push_back(FunctionState{def, {}, {}, {}});
  return Function(this, static_cast<int>(impl_->fns.size() - 1));
}

Array Session::get(const std::string& name) const {
  const int32_t id = impl_->find_variable(name, "Session::get");
  return impl_->vars.store(id);
}

void Session::set(const std::string& name, const ArrayView& value) {
  const int32_t id = impl_->find_variable(name, "Session::set");
  const size_t bytes = exec::check_set(impl_->g->node(id), name, value, "Session::set");
  if (bytes > 0) std::memmove(impl_->vars.ptr(id), value.data, bytes);
}

void* Session::variable_data(int32_t node_id) {
  impl_->ensure_variables();
  return impl_->vars.ptr(impl_->vars.check_id(*impl_->g, node_id, "Session::variable_data"));
}

const Graph& Session::graph() const { return *impl_->g; }

size_t Session::scratch_bytes() const { return static_cast<size_t>(impl_->arena_bytes); }

}  // namespace synk
