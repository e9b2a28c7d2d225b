// src/data/checkpoint.cpp — checkpoints of a Session, CudaSession or
// Runtime: their shared variables through the .npz format (npz.cpp). Only
// public calls of the targets are used (get/set, snapshot/restore).
#include <string>
#include <unordered_map>
#include <vector>

#include "data/npz_internal.hpp"
#include "synk/checkpoint.hpp"
#include "synk/cuda_session.hpp"
#include "synk/session.hpp"

namespace synk {
namespace {

struct VarInfo {
  std::string name;
  DType dtype;
  Shape shape;
};

std::vector<VarInfo> graph_variables(const Graph& g) {
  std::vector<VarInfo> out;
  for (const Node& n : g.nodes())
    if (n.op == Op::Variable) out.push_back({n.name, n.dtype, n.shape});
  return out;
}

template <class S>
VarValues session_values(const S& s) {
  VarValues out;
  for (const VarInfo& v : graph_variables(s.graph())) out.emplace_back(v.name, s.get(v.name));
  return out;
}

std::string prefix(const std::string& path) { return "load_checkpoint: '" + path + "': "; }

// Reads the file and checks it against the target's variables; throws
// before anything is changed.
VarValues checked_file(const std::string& path, const std::vector<VarInfo>& target, const char* kind,
                       const LoadOptions& opts) {
  VarValues values = detail::read_npz(path, "load_checkpoint");
  std::unordered_map<std::string, const VarInfo*> by_name;
  for (const VarInfo& v : target) by_name.emplace(v.name, &v);
  for (const auto& [name, a] : values) {
    auto it = by_name.find(name);
    if (it == by_name.end())
      throw ArgumentError(prefix(path) + "variable '" + name + "' is not a variable of the " + kind + " (" +
                          std::to_string(target.size()) + " variables; a checkpoint of another model?)");
    const VarInfo& v = *it->second;
    if (a.dtype() != v.dtype)
      throw TypeError(prefix(path) + "variable '" + name + "' is " + dtype_name(a.dtype()) + " in the file, " +
                      dtype_name(v.dtype) + " in the " + kind);
    if (a.shape() != v.shape)
      throw ShapeError(prefix(path) + "variable '" + name + "' has shape " + to_string(a.shape()) +
                       " in the file, " + to_string(v.shape) + " in the " + kind);
    by_name.erase(it);
  }
  if (!opts.partial && !by_name.empty()) {
    // The first missing one in the target's order.
    for (const VarInfo& v : target) {
      if (!by_name.count(v.name)) continue;
      throw ArgumentError(prefix(path) + "the file has no value for variable '" + v.name + "'" +
                          (by_name.size() > 1 ? " (and " + std::to_string(by_name.size() - 1) + " more)" : "") +
                          " of the " + kind + "; LoadOptions::partial keeps such variables as they are");
    }
  }
  return values;
}

template <class S>
void load_session(const std::string& path, S& s, const char* kind, const LoadOptions& opts) {
  const VarValues values = checked_file(path, graph_variables(s.graph()), kind, opts);
  for (const auto& [name, a] : values) s.set(name, a.view());
}

}  // namespace

void save_checkpoint(const std::string& path, const Session& s) {
  detail::write_npz(path, session_values(s), "save_checkpoint");
}

void save_checkpoint(const std::string& path, const CudaSession& s) {
  detail::write_npz(path, session_values(s), "save_checkpoint");
}

void save_checkpoint(const std::string& path, const Runtime& rt) {
  const VarValues values = rt.snapshot();
  // An empty file would load into nothing and hide the mistake.
  if (values.empty())
    throw ArgumentError("save_checkpoint: '" + path +
                        "': the runtime has no distributed variables (call distribute() first)");
  detail::write_npz(path, values, "save_checkpoint");
}

void load_checkpoint(const std::string& path, Session& s, const LoadOptions& opts) {
  load_session(path, s, "session", opts);
}

void load_checkpoint(const std::string& path, CudaSession& s, const LoadOptions& opts) {
  load_session(path, s, "session", opts);
}

void load_checkpoint(const std::string& path, Runtime& rt, const LoadOptions& opts) {
  // The master's snapshot names the distributed variables with their dtypes
  // and shapes (and works on a failed runtime, whose restore() then throws).
  std::vector<VarInfo> target;
  for (const auto& [name, a] : rt.snapshot()) target.push_back({name, a.dtype(), a.shape()});
  if (target.empty())
    throw ArgumentError(prefix(path) + "the runtime has no distributed variables (call distribute() first)");
  rt.restore(checked_file(path, target, "runtime", opts));
}

}  // namespace synk
