// src/exec/session_executor.hpp — the part of an Executor over a session
// (Session, CudaSession) that is the same for every backend: the table of
// compiled functions and the calls through it (private header).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "exec/executor.hpp"
#include "synk/error.hpp"

namespace synk::exec {

template <class SessionT, class FunctionT>
class SessionExecutor : public Executor {
 public:
  // `backend` names it in messages ("CPU executor").
  template <class... Args>
  explicit SessionExecutor(const char* backend, Args&&... args)
      : backend_(backend), s_(std::forward<Args>(args)...) {}

  int add(const FunctionDef& def) override {
    fns_.push_back(s_.function(def));
    return static_cast<int>(fns_.size() - 1);
  }
  std::vector<Array> call(int fn, const std::vector<ArrayView>& inputs, const CallKey* key) override {
    if (!key) return at(fn)(inputs);
    if constexpr (requires(FunctionT& f) { f(inputs, *key); }) return at(fn)(inputs, *key);
    else no_keys();
  }
  void call_into(int fn, const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                 const CallKey* key) override {
    if (!key) return at(fn).call_into(inputs, outputs);
    if constexpr (requires(FunctionT& f) { f.call_into(inputs, outputs, *key); }) at(fn).call_into(inputs, outputs, *key);
    else no_keys();
  }
  void call_into_ready(int fn, const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                       const std::function<void(size_t)>& ready) override {
    if constexpr (requires(FunctionT& f) { f.call_into(inputs, outputs, ready); }) at(fn).call_into(inputs, outputs, ready);
    else Executor::call_into_ready(fn, inputs, outputs, ready);
  }
  void* variable_storage(int32_t id) override { return s_.variable_data(id); }

 protected:
  [[noreturn]] void no_keys() const {
    throw BackendError(std::string(backend_) + ": calls with a caller's dropout key (the deterministic runtime) are "
                       "not supported by this backend");
  }
  FunctionT& at(int fn) {
    if (fn < 0 || static_cast<size_t>(fn) >= fns_.size())
      throw ArgumentError(std::string(backend_) + ": function index " + std::to_string(fn) + " of " +
                          std::to_string(fns_.size()));
    return fns_[static_cast<size_t>(fn)];
  }
  const char* backend_;
  SessionT s_;
  std::vector<FunctionT> fns_;
};

}  // namespace synk::exec
