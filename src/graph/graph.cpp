// The graph container: node storage, names, function specs and variable
// initialisation. Shape inference for ops lives in ops.cpp.
#include "synk/graph.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>

#include "graph/internal.hpp"
#include "synk/error.hpp"

namespace synk {

const char* op_name(Op op) {
  static const char* const names[] = {
      "input", "variable", "constant", "add", "sub", "mul", "div", "equal",
      "neg", "relu", "tanh", "sigmoid", "exp", "log", "sqrt", "square",
      "pow", "cast", "relu_grad", "sum", "mean", "max", "argmax", "reshape",
      "transpose", "broadcast_to", "matmul", "softmax", "log_softmax",
      "softmax_cross_entropy", "softmax_cross_entropy_grad", "conv2d",
      "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d",
      "max_pool2d_grad", "dropout_mask", "gelu", "gelu_grad", "abs",
      "abs_grad", "maximum", "minimum", "maximum_grad_mask", "clip",
      "clip_mask", "where", "greater", "less", "sin", "cos",
      "concat", "slice", "slice_grad",
      "embedding", "embedding_grad", "batch_matmul",
      "layer_norm", "layer_norm_grad",
      "batch_norm_var", "batch_norm", "batch_norm_grad", "batch_norm_running_var",
      "avg_pool2d", "avg_pool2d_grad", "batch_norm_grad_gamma",
      "rank_sum", "batch_norm_grad_sums",
      "attention", "attention_grad"};
  static_assert(sizeof(names) / sizeof(names[0]) == static_cast<size_t>(Op::kCount));
  auto i = static_cast<size_t>(op);
  return i < static_cast<size_t>(Op::kCount) ? names[i] : "?";
}

bool function_runs_op(const Graph& g, const FunctionDef& f, Op op) {
  std::vector<char> seen(g.size(), 0);
  std::vector<int32_t> todo(f.outputs.begin(), f.outputs.end());
  for (auto [var, val] : f.updates) todo.push_back(val);
  while (!todo.empty()) {
    const int32_t id = todo.back();
    todo.pop_back();
    if (id < 0 || static_cast<size_t>(id) >= seen.size() || seen[static_cast<size_t>(id)]) continue;
    seen[static_cast<size_t>(id)] = 1;
    const Node& n = g.node(id);
    if (n.op == op) return true;
    todo.insert(todo.end(), n.inputs.begin(), n.inputs.end());
  }
  return false;
}

const char* collect_name(Collect c) {
  switch (c) {
    case Collect::avg: return "avg";
    case Collect::sum: return "sum";
    case Collect::max: return "max";
    case Collect::min: return "min";
    case Collect::prod: return "prod";
    case Collect::gather: return "gather";
    case Collect::none: return "none";
  }
  return "?";
}

Graph& Tensor::graph() const {
  if (!g_) throw ArgumentError("use of an empty synk::Tensor");
  return *g_;
}

const Node& Tensor::node() const { return graph().node(id_); }

static void check_shape(const std::string& what, const Shape& s, bool allow_batch) {
  for (Dim d : s) {
    if (d == batch && allow_batch) continue;
    if (d < 0)
      throw ShapeError(what + ": invalid shape " + to_string(s) +
                       (d == batch ? " (batch is not allowed here)" : ""));
  }
  (void)static_numel(s);  // throws if the element count overflows
}

Tensor Graph::input(const std::string& name, DType dtype, Shape shape) {
  check_shape("input '" + name + "'", shape, true);
  Node n;
  n.op = Op::Input;
  n.dtype = dtype;
  n.shape = std::move(shape);
  n.name = name;
  return add_node(std::move(n));
}

Tensor Graph::variable(const std::string& name, Shape shape, Init init, DType dtype) {
  check_shape("variable '" + name + "'", shape, false);
  if (dtype == DType::i32 && init.kind != Init::kZeros && init.kind != Init::kConstant)
    throw TypeError("variable '" + name + "': an i32 variable takes zeros or constant init");
  if (init.kind > Init::kGlorotNormal)
    throw ArgumentError("variable '" + name + "': unknown init kind");
  Node n;
  n.op = Op::Variable;
  n.dtype = dtype;
  n.shape = std::move(shape);
  n.name = name;
  n.ints = {static_cast<int64_t>(init.kind)};
  n.floats = {init.a, init.b};
  return add_node(std::move(n));
}

Tensor Graph::constant(float value, DType dtype) {
  if (dtype != DType::f32 && dtype != DType::i32)
    throw TypeError("Graph::constant: dtype " + std::to_string(static_cast<int>(dtype)) + " is not a synk::DType");
  // An i32 constant holds a float exactly only if it is a whole number in
  // i32's range; anything else would be truncated silently.
  if (dtype == DType::i32 && !exact_i32(value)) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", static_cast<double>(value));
    throw TypeError(std::string("Graph::constant: ") + text +
                    " is not a whole number in i32's range, so an i32 constant would truncate it");
  }
  Node n;
  n.op = Op::Constant;
  n.dtype = dtype;
  n.floats = {value};
  return add_node(std::move(n));
}

Tensor Graph::find(const std::string& name) {
  auto it = names_.find(name);
  if (it == names_.end()) throw ArgumentError("no input or variable named '" + name + "' in the graph");
  return Tensor(this, it->second);
}

std::vector<Tensor> Graph::variables() {
  std::vector<Tensor> r;
  for (size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].op == Op::Variable) r.emplace_back(this, static_cast<int32_t>(i));
  return r;
}

Tensor Graph::tensor(int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= nodes_.size())
    throw ArgumentError("node id " + std::to_string(id) + " out of range");
  return Tensor(this, id);
}

Tensor Graph::add_node(Node n) {
  const auto id = static_cast<int32_t>(nodes_.size());
  for (int32_t in : n.inputs)
    if (in < 0 || in >= id)
      throw ArgumentError(std::string(op_name(n.op)) + ": input id " + std::to_string(in) +
                          " does not name an earlier node");
  if (n.op == Op::Input || n.op == Op::Variable) {
    if (n.name.empty()) throw ArgumentError(std::string(op_name(n.op)) + ": empty name");
    if (!names_.emplace(n.name, id).second)
      throw ArgumentError("the name '" + n.name + "' is already used in this graph");
  }
  if (n.op == Op::DropoutMask && !n.ints.empty() && n.ints[0] >= streams_) streams_ = n.ints[0] + 1;
  nodes_.push_back(std::move(n));
  return Tensor(this, id);
}

void Graph::add_state_update(Tensor trigger, Update u) {
  for (const Tensor* t : {&trigger, &u.variable, &u.value})
    if (!t->valid() || &t->graph() != this)
      throw ArgumentError("Graph::add_state_update: a tensor is empty or belongs to another graph");
  const Node& v = u.variable.node();
  if (v.op != Op::Variable)
    throw ArgumentError("Graph::add_state_update: the target is a " + std::string(op_name(v.op)) + " node, not a variable");
  if (u.value.dtype() != v.dtype || u.value.shape() != v.shape)
    throw ArgumentError("Graph::add_state_update: update of '" + v.name + "' " + to_string(v.shape) + " " +
                        dtype_name(v.dtype) + " with a value of " + to_string(u.value.shape()) + " " +
                        dtype_name(u.value.dtype()));
  state_updates_.push_back({trigger.id(), u.variable.id(), u.value.id()});
}

FunctionDef make_function_def(const FunctionSpec& spec) {
  Graph* g = nullptr;
  auto same_graph = [&](const Tensor& t, const std::string& what) {
    if (!t.valid()) throw ArgumentError("function '" + spec.name + "': " + what + " is an empty tensor");
    if (!g) g = &t.graph();
    if (&t.graph() != g)
      throw ArgumentError("function '" + spec.name + "': " + what + " belongs to another graph");
  };
  FunctionDef f;
  f.name = spec.name;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    const Tensor& t = spec.inputs[i];
    same_graph(t, "input " + std::to_string(i));
    if (t.node().op != Op::Input)
      throw ArgumentError("function '" + spec.name + "': input " + std::to_string(i) +
                          " is a " + op_name(t.node().op) + " node, not a graph input");
    f.inputs.push_back(t.id());
  }
  for (size_t i = 0; i < spec.outputs.size(); ++i) {
    same_graph(spec.outputs[i].value, "output " + std::to_string(i));
    f.outputs.push_back(spec.outputs[i].value.id());
    f.collects.push_back(spec.outputs[i].collect);
  }
  for (size_t i = 0; i < spec.updates.size(); ++i) {
    const Update& u = spec.updates[i];
    same_graph(u.variable, "update " + std::to_string(i) + " variable");
    same_graph(u.value, "update " + std::to_string(i) + " value");
    f.updates.emplace_back(u.variable.id(), u.value.id());
  }
  if (g && !g->state_updates().empty()) {
    // State updates whose trigger the function computes, to a fixed point
    // (an appended update's value may reach another trigger). A variable
    // the user updates keeps the user's update.
    const auto& nodes = g->nodes();
    std::vector<char> reach(nodes.size(), 0), updated(nodes.size(), 0), taken(g->state_updates().size(), 0);
    for (auto [var, val] : f.updates) updated[static_cast<size_t>(var)] = 1;
    std::vector<int32_t> roots(f.outputs.begin(), f.outputs.end());
    for (auto [var, val] : f.updates) roots.push_back(val);
    for (bool grew = true; grew;) {
      grew = false;
      for (int32_t r : roots) reach[static_cast<size_t>(r)] = 1;
      for (size_t id = nodes.size(); id-- > 0;)
        if (reach[id])
          for (int32_t in : nodes[id].inputs) reach[static_cast<size_t>(in)] = 1;
      for (size_t i = 0; i < g->state_updates().size(); ++i) {
        const Graph::StateUpdate su = g->state_updates()[i];
        if (taken[i] || !reach[static_cast<size_t>(su.trigger)] || updated[static_cast<size_t>(su.variable)]) continue;
        taken[i] = 1;
        updated[static_cast<size_t>(su.variable)] = 1;
        f.updates.emplace_back(su.variable, su.value);
        roots.push_back(su.value);
        grew = true;
      }
    }
  }
  if (g) validate_function_def(g->nodes(), f);
  return f;
}

void validate_function_def(const std::vector<Node>& nodes, const FunctionDef& f) {
  const auto n = static_cast<int32_t>(nodes.size());
  auto fail = [&](const std::string& msg) -> void {
    throw ArgumentError("function '" + f.name + "': " + msg);
  };
  auto in_range = [&](int32_t id, const char* what) {
    if (id < 0 || id >= n) fail(std::string(what) + " id " + std::to_string(id) + " out of range");
  };
  for (int32_t id : f.inputs) {
    in_range(id, "input");
    if (nodes[id].op != Op::Input) fail("input id " + std::to_string(id) + " is not an input node");
  }
  for (size_t i = 0; i < f.inputs.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (f.inputs[i] == f.inputs[j]) fail("input '" + nodes[f.inputs[i]].name + "' is listed twice");
  if (f.collects.size() != f.outputs.size()) fail("one collect mode per output is required");
  for (size_t i = 0; i < f.collects.size(); ++i)
    if (static_cast<uint8_t>(f.collects[i]) > static_cast<uint8_t>(Collect::none))
      fail("output " + std::to_string(i) + " has collect mode " + std::to_string(static_cast<int>(f.collects[i])) +
           ", which is not a synk::Collect");
  for (int32_t id : f.outputs) in_range(id, "output");
  for (auto [var, val] : f.updates) {
    in_range(var, "update variable");
    in_range(val, "update value");
    const Node& v = nodes[var];
    if (v.op != Op::Variable) fail("update target id " + std::to_string(var) + " is not a variable");
    if (nodes[val].dtype != v.dtype || nodes[val].shape != v.shape)
      fail("update of '" + v.name + "' " + to_string(v.shape) + " " + dtype_name(v.dtype) +
           " with a value of " + to_string(nodes[val].shape) + " " + dtype_name(nodes[val].dtype));
  }
  for (size_t i = 0; i < f.updates.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (f.updates[i].first == f.updates[j].first)
        fail("variable '" + nodes[f.updates[i].first].name + "' is updated twice");
  // Every Input the outputs depend on must be a function input.
  std::vector<char> need(nodes.size(), 0), is_input(nodes.size(), 0);
  for (int32_t id : f.inputs) is_input[id] = 1;
  for (int32_t id : f.outputs) need[id] = 1;
  for (auto [var, val] : f.updates) need[val] = 1;
  for (int32_t id = n - 1; id >= 0; --id) {
    if (!need[id]) continue;
    if (nodes[id].op == Op::Input && !is_input[id])
      fail("needs input '" + nodes[id].name + "', which is not among the function's inputs");
    for (int32_t in : nodes[id].inputs)
      if (in >= 0 && in < id) need[in] = 1;
  }
}

// --- initialisation -------------------------------------------------------------

namespace {
uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
double uniform01(uint64_t& s) { return (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); }
double normal01(uint64_t& s) {
  double u1 = uniform01(s), u2 = uniform01(s);
  if (u1 < 1e-300) u1 = 1e-300;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}
}  // namespace

void initial_value(const Node& var, int32_t id, uint64_t seed, void* out) {
  const int64_t n = numel(var.shape);
  const auto kind = static_cast<Init::Kind>(var.ints.empty() ? 0 : var.ints[0]);
  const float a = var.floats.size() > 0 ? var.floats[0] : 0.f;
  const float b = var.floats.size() > 1 ? var.floats[1] : 0.f;
  if (var.dtype == DType::i32) {
    auto* p = static_cast<int32_t*>(out);
    for (int64_t i = 0; i < n; ++i) p[i] = kind == Init::kConstant ? static_cast<int32_t>(a) : 0;
    return;
  }
  auto* p = static_cast<float*>(out);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(id) + 1) * 0xD1B54A32D192ED03ull;
  // Fans as Glorot & Bengio define them; for conv weights [O, C, KH, KW]
  // the receptive field multiplies both.
  double fan_in = 1, fan_out = 1;
  const Shape& sh = var.shape;
  if (sh.size() == 1) fan_in = fan_out = static_cast<double>(sh[0]);
  else if (sh.size() >= 2) {
    double rf = 1;
    for (size_t i = 2; i < sh.size(); ++i) rf *= static_cast<double>(sh[i]);
    if (sh.size() == 2) { fan_in = static_cast<double>(sh[0]); fan_out = static_cast<double>(sh[1]); }
    else { fan_in = static_cast<double>(sh[1]) * rf; fan_out = static_cast<double>(sh[0]) * rf; }
  }
  switch (kind) {
    case Init::kZeros: std::memset(p, 0, static_cast<size_t>(n) * sizeof(float)); break;
    case Init::kConstant: for (int64_t i = 0; i < n; ++i) p[i] = a; break;
    case Init::kUniform:
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(a + (b - a) * uniform01(s));
      break;
    case Init::kNormal:
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(a + b * normal01(s));
      break;
    case Init::kGlorotUniform: {
      const double lim = a * std::sqrt(6.0 / (fan_in + fan_out));
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(lim * (2 * uniform01(s) - 1));
      break;
    }
    case Init::kGlorotNormal: {
      const double sd = a * std::sqrt(2.0 / (fan_in + fan_out));
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(sd * normal01(s));
      break;
    }
  }
}

}  // namespace synk
