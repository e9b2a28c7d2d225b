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
  std::vector<Array> call(int fn, const std::vector<ArrayView>& inputs) override { return at(fn)(inputs); }
  void call_into(int fn, const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs) override {
    at(fn).call_into(inputs, outputs);
  }
  void* variable_storage(int32_t id) override { return s_.variable_data(id); }

 protected:
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
