// Shared by the executors (see common.hpp).
#include "exec/common.hpp"

#include <string>

#include "synk/error.hpp"

namespace synk::exec {

std::string fn_label(const FunctionDef& def) { return "function '" + def.name + "'"; }

void rethrow_in_step(const Error& e, const std::string* function, const plan::Step& s, const char* where) {
  const std::string msg = "function '" + (function ? *function : std::string()) + "': " + op_name(s.op) +
                          " (node " + std::to_string(s.node) + ")" + where + ": " + e.what();
  if (dynamic_cast<const ArgumentError*>(&e)) throw ArgumentError(msg);
  if (dynamic_cast<const ShapeError*>(&e)) throw ShapeError(msg);
  if (dynamic_cast<const TypeError*>(&e)) throw TypeError(msg);
  if (dynamic_cast<const BackendError*>(&e)) throw BackendError(msg);
  throw Error(msg);
}

void check_spec_graph(const FunctionSpec& spec, const Graph& g) {
  auto same_graph = [&](const Tensor& t) { return t.valid() && &t.graph() == &g; };
  for (const Tensor& t : spec.inputs)
    if (!same_graph(t)) throw ArgumentError("function '" + spec.name + "': an input is not a tensor of this session's graph");
  for (const OutputSpec& o : spec.outputs)
    if (!same_graph(o.value)) throw ArgumentError("function '" + spec.name + "': an output is not a tensor of this session's graph");
  for (const Update& u : spec.updates)
    if (!same_graph(u.variable) || !same_graph(u.value))
      throw ArgumentError("function '" + spec.name + "': an update is not of this session's graph");
}

int64_t check_inputs(const std::vector<Node>& nodes, const FunctionDef& def, const std::vector<ArrayView>& inputs) {
  if (inputs.size() != def.inputs.size())
    throw ArgumentError(fn_label(def) + ": expected " + std::to_string(def.inputs.size()) + " inputs, got " +
                        std::to_string(inputs.size()));
  int64_t b = -1;
  std::string b_from;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Node& n = nodes[static_cast<size_t>(def.inputs[i])];
    const ArrayView& v = inputs[i];
    if (v.dtype != n.dtype)
      throw ArgumentError(fn_label(def) + ": input '" + n.name + "' has dtype " + dtype_name(v.dtype) +
                          ", expected " + dtype_name(n.dtype));
    bool ok = v.shape.size() == n.shape.size();
    for (size_t d = 0; ok && d < v.shape.size(); ++d) {
      if (v.shape[d] < 0) ok = false;
      else if (n.shape[d] != batch && n.shape[d] != v.shape[d]) ok = false;
    }
    if (!ok)
      throw ShapeError(fn_label(def) + ": input '" + n.name + "' has shape " + to_string(v.shape) +
                       ", expected " + to_string(n.shape));
    for (size_t d = 0; d < v.shape.size(); ++d) {
      if (n.shape[d] != batch) continue;
      if (b < 0) {
        b = v.shape[d];
        b_from = n.name;
      } else if (v.shape[d] != b) {
        throw ShapeError(fn_label(def) + ": input '" + n.name + "' has batch size " + std::to_string(v.shape[d]) +
                         " but input '" + b_from + "' has " + std::to_string(b));
      }
    }
    if (v.data == nullptr && v.numel() > 0)
      throw ArgumentError(fn_label(def) + ": input '" + n.name + "' has no data");
  }
  return b;
}

Array initial_array(const Node& var, int32_t id, uint64_t seed) {
  if (has_batch(var.shape))
    throw ShapeError("variable '" + var.name + "' has a batch dim in its shape " + to_string(var.shape));
  Array a(var.dtype, var.shape);
  if (a.numel() > 0) initial_value(var, id, seed, a.raw());
  return a;
}

}  // namespace synk::exec
