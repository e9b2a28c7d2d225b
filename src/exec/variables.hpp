// src/exec/variables.hpp — a session's shared variables, whatever memory
// holds them (an Array on the CPU, a device buffer on a GPU), with one set of
// lookups, checks and messages for every backend (private header).
//
//   VariableTable<Array> vars;
//   vars.scan(g, [&](const Node& n, int32_t id) { return initial_array(n, id, seed); },
//             [](Array& a) { return a.raw(); });
//   void* w = vars.ptr(vars.find(g, "W", "Session::set"));
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "synk/array.hpp"
#include "synk/error.hpp"
#include "synk/graph.hpp"

namespace synk::exec {

template <class Store>
class VariableTable {
 public:
  // Adds the variables the graph gained since the last scan: make(node, id)
  // gives each one's initialised storage, addr(store) its address.
  template <class Make, class Addr>
  void scan(const Graph& g, Make&& make, Addr&& addr) {
    const auto& nodes = g.nodes();
    if (scanned_ == nodes.size()) return;
    vars_.resize(nodes.size());
    ptr_.assign(nodes.size(), nullptr);
    for (size_t id = scanned_; id < nodes.size(); ++id) {
      const Node& n = nodes[id];
      if (n.op != Op::Variable) continue;
      vars_[id] = make(n, static_cast<int32_t>(id));
      names_[n.name] = static_cast<int32_t>(id);
    }
    for (size_t id = 0; id < nodes.size(); ++id) ptr_[id] = addr(vars_[id]);
    scanned_ = nodes.size();
  }

  // The id of the variable `name` (ArgumentError "<who>: no variable named ...").
  int32_t find(const std::string& name, const char* who) const {
    auto it = names_.find(name);
    if (it == names_.end()) throw ArgumentError(std::string(who) + ": no variable named '" + name + "'");
    return it->second;
  }
  // Checks that node `id` of g is a scanned variable (ArgumentError otherwise).
  int32_t check_id(const Graph& g, int32_t id, const char* who) const {
    if (id < 0 || static_cast<size_t>(id) >= vars_.size() || g.node(id).op != Op::Variable)
      throw ArgumentError(std::string(who) + ": node " + std::to_string(id) + " is not a variable");
    return id;
  }

  Store& store(int32_t id) { return vars_[static_cast<size_t>(id)]; }
  void* ptr(int32_t id) const { return ptr_[static_cast<size_t>(id)]; }
  // Every node's variable address by node id (null for other nodes).
  void* const* ptrs() const { return ptr_.data(); }

 private:
  std::vector<Store> vars_;  // by node id; empty for non-variables
  std::vector<void*> ptr_;   // by node id
  std::unordered_map<std::string, int32_t> names_;
  size_t scanned_ = 0;
};

// set()'s checks of a value for variable node `n` named `name`: dtype
// (ArgumentError), shape (ShapeError), data present. Returns the bytes to
// copy (0: an empty variable, nothing to do).
inline size_t check_set(const Node& n, const std::string& name, const ArrayView& value, const char* who) {
  if (value.dtype != n.dtype)
    throw ArgumentError(std::string(who) + ": variable '" + name + "' has dtype " + dtype_name(n.dtype) + ", got " +
                        dtype_name(value.dtype));
  if (value.shape != n.shape)
    throw ShapeError(std::string(who) + ": variable '" + name + "' has shape " + to_string(n.shape) + ", got " +
                     to_string(value.shape));
  const size_t bytes = static_cast<size_t>(numel(n.shape)) * dtype_size(n.dtype);
  if (bytes > 0 && !value.data) throw ArgumentError(std::string(who) + ": value for '" + name + "' has no data");
  return bytes;
}

}  // namespace synk::exec
