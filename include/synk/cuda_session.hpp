// synk/cuda_session.hpp — one process, one GPU: the same API as
// synk::Session (synk/session.hpp), with variables in device memory and
// functions compiled for the GPU.
//
// Functions take and return host arrays. Per function and batch size the
// planner of the CPU executor resolves shapes and places every value in one
// device arena. The first call runs eagerly (warm-up), the second records
// all its work (cuBLAS GEMMs, kernels in kernels/, update copies) as a
// CUDA graph and later calls replay it: a call is then the copies of the
// call number (dropout) and the inputs, one graph launch, the output copies
// and one stream synchronisation.
//
//   if (synk::CudaSession::available()) {
//     synk::CudaSession s(g, {.seed = 1});
//     auto train = s.function({.inputs = {x, y}, .outputs = {{loss}}, .updates = ups});
//     float l = train({X, Y})[0].scalar();
//     synk::Array W = s.get("W");                  // copied from the device
//   }
//
// Dropout masks equal the CPU Session's bit for bit (same seed, rank and
// call count, where a call refused for a bad label counts too). Where synk
// is built without CUDA, or there is no device, the constructor throws
// BackendError saying what the CUDA runtime answered.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "synk/array.hpp"
#include "synk/graph.hpp"
#include "synk/session.hpp"  // CallKey

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace synk {

// SessionOptions::rank_sum (session.hpp) on the device: in and out in
// device memory, the sum ordered after the work queued on `stream` and
// before the work queued on it afterwards (an NCCL all-reduce on it).
using CudaRankSumFn = std::function<void(const float* in, float* out, size_t n, CUstream_st* stream)>;

struct CudaSessionOptions {
  uint64_t seed = 0;   // variable initialisation and dropout streams
  int rank = 0;        // mixed into dropout streams (distinct per worker)
  int device = 0;      // CUDA device ordinal among the visible ones
  bool tf32 = false;   // let cuBLAS use TF32 tensor cores (matmul, conv)
  bool graphs = true;  // capture each function per batch size as a CUDA graph
  // Debugging: no graphs, and a synchronisation after every step so that an
  // asynchronous fault is reported naming its op and node.
  bool sync_each_step = false;
  CudaRankSumFn rank_sum;  // empty: this session is the only rank (rank_sum copies)
};

class CudaSession;

// A compiled function; callable while its CudaSession lives.
class CudaFunction {
 public:
  CudaFunction() = default;
  // As synk::Function: inputs in FunctionSpec order, outputs in order,
  // updates applied after all outputs are computed. Returns when the
  // outputs are on the host and the updates are done.
  std::vector<Array> operator()(const std::vector<ArrayView>& inputs) const;
  // As operator(), but output i is copied to outputs[i] (host or device
  // memory: the copies find out which), and inputs may be in host or device
  // memory too, so results can stay on the GPU (e.g. gradients for an NCCL
  // all-reduce, then fed to the update function). Returns when the copies
  // are done.
  void call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs) const;
  // With dropout keyed by the caller (synk::CallKey, as Function's): the
  // same key draws the same masks as a Session with the same seed.
  std::vector<Array> operator()(const std::vector<ArrayView>& inputs, CallKey key) const;
  void call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs, CallKey key) const;
  // call_into, calling ready(i) once per output (as synk::Function's): an
  // output in device memory that a step computes is handed over as soon as
  // the step that last touches it is queued, with its copy to outputs[i]
  // queued after it, while the rest of the function is still to be queued
  // (the call then runs in segments, one CUDA graph each). Work queued on
  // stream() from ready(i) on (or ordered after it by an event: a
  // collective on a side stream) sees output i final. Outputs to host
  // memory, and those the updates would overwrite, are handed over after
  // the call, complete. An exception from ready() ends the call.
  void call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                 const std::function<void(size_t)>& ready) const;
  const FunctionDef& def() const;
  int index() const { return index_; }

 private:
  friend class CudaSession;
  CudaFunction(CudaSession* s, int index) : s_(s), index_(index) {}
  CudaSession* s_ = nullptr;
  int index_ = -1;
};

class CudaSession {
 public:
  // True when synk was built with CUDA and a device is visible. Asks in a
  // short-lived child process, so this process stays free of CUDA and may
  // still synk::fork() CUDA ranks afterwards (a process that already
  // initialised CUDA is asked directly).
  static bool available() noexcept;

  CudaSession(const Graph& g, CudaSessionOptions opts = {});
  ~CudaSession();
  CudaSession(const CudaSession&) = delete;
  CudaSession& operator=(const CudaSession&) = delete;

  CudaFunction function(const FunctionSpec& spec);
  CudaFunction function(const FunctionDef& def);

  // Shared-variable values, copied from / to the device.
  Array get(const std::string& name) const;
  void set(const std::string& name, const ArrayView& value);
  // Device pointer to a variable's storage (numel(shape) elements), for
  // collectives on device-resident variables.
  void* variable_data(int32_t node_id);

  const Graph& graph() const;
  int device() const;
  const CudaSessionOptions& options() const;

  // Bytes of the device arena (values, workspaces, staged inputs) shared by
  // all compiled functions.
  size_t scratch_bytes() const;
  // The stream (cudaStream_t) every function of this session runs on, to
  // order other work (collectives) with the calls.
  CUstream_st* stream() const;
  // CUDA graphs captured so far: one per function and batch size called at
  // least twice, plus a re-capture when the arena had to grow; a call that
  // hands outputs over early (call_into with ready) captures one per
  // segment. Tests use it to see replays.
  uint64_t graph_captures() const;

  struct Impl;

 private:
  friend class CudaFunction;
  std::unique_ptr<Impl> impl_;
};

}  // namespace synk
