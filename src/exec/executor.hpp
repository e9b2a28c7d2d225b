// src/exec/executor.hpp — what a rank needs from a backend (private).
//
// The runtime drives every rank, CPU or CUDA, through this one interface,
// so its logic (calls, slices, training steps, variable collectives) is one
// code path that the CPU test suite covers for both kinds of rank. What
// differs lives behind it: how a function runs and the rank's memory, where
// variables, scratch and the collectives' buffers live.
//
//   std::unique_ptr<exec::Executor> ex = exec::make_executor(g, {.seed = 1, .rank = r});
//   const int f = ex->add(def);
//   std::vector<Array> out = ex->call(f, inputs, nullptr);
//
// A third backend implements Executor in src/exec/<backend>/ and adds one
// case to make_executor (src/exec/executor.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "synk/array.hpp"
#include "synk/graph.hpp"
#include "synk/runtime.hpp"  // Device
#include "synk/session.hpp"  // CallKey

namespace synk::cuda {
class GpuMarks;  // cuda/marks.hpp
}

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace synk::exec {

using Device = synk::Device;  // synk/runtime.hpp

struct ExecutorOptions {
  Device device = Device::cpu;
  uint64_t seed = 0;     // variable initialisation and dropout streams
  int rank = 0;          // mixed into dropout streams
  int ordinal = 0;       // CUDA: the device among the visible ones
  int blas_threads = 1;  // CPU: OpenBLAS threads
  // rank_sum steps (synk/ops.hpp): out = the sum over the ranks of in, n
  // floats in the rank's memory, ordered on `stream` (nullptr on the CPU;
  // SessionOptions::rank_sum, CudaSessionOptions::rank_sum). Empty: one rank.
  std::function<void(const float* in, float* out, size_t n, CUstream_st* stream)> rank_sum;
};

class Executor {
 public:
  virtual ~Executor() = default;

  // Adds a function of the graph (checked); returns its index for call().
  virtual int add(const FunctionDef& def) = 0;
  // Runs function `fn`; outputs as host arrays, updates applied. key: the
  // dropout key (Function::call_into), null for the session's own (rank,
  // call count); BackendError where the backend has no keyed calls.
  virtual std::vector<Array> call(int fn, const std::vector<ArrayView>& inputs, const CallKey* key) = 0;
  // Same, writing output i to outputs[i]: host memory, or the rank's memory
  // (below). Inputs may be either too.
  virtual void call_into(int fn, const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                         const CallKey* key) = 0;
  // Same (no key), calling ready(i) once output i is final, as early as the
  // backend can tell (Function::call_into with ready): on the CPU from the
  // step that last touches it, while later steps run. The default, for
  // backends that cannot tell, runs the call and then reports every
  // output; work queued on stream() is then ordered after the whole call.
  virtual void call_into_ready(int fn, const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                               const std::function<void(size_t)>& ready) {
    call_into(fn, inputs, outputs, nullptr);
    for (size_t k = 0; k < outputs.size(); ++k) ready(k);
  }

  // ---- the rank's memory -------------------------------------------------------
  // Variables, scratch and the rank's comm (comm/comm.hpp) live in one
  // memory: host memory on the CPU, the device's on a GPU. The runtime moves
  // data in and out of it only through these calls, so it never asks which
  // memory it is. Work on it is ordered on stream() (the comm orders its
  // collectives after that stream's work); the copies below are complete
  // for the host when they return.

  // A variable's storage (numel(shape) elements).
  virtual void* variable_storage(int32_t id) = 0;
  // Its whole value (nb bytes) to / from host memory.
  virtual void read_variable(int32_t id, void* dst, size_t nb) = 0;
  virtual void write_variable(int32_t id, const void* src, size_t nb) = 0;
  // At least `bytes` of the rank's memory for `use`, kept (contents
  // unspecified) until the next request for more of the same use.
  enum class Scratch : uint8_t { grads, slice, staging, chunks };
  virtual void* scratch(Scratch use, size_t bytes) = 0;
  // nb bytes between host memory and the rank's memory.
  virtual void copy_in(void* dst, const void* host_src, size_t nb) = 0;
  virtual void copy_out(void* host_dst, const void* src, size_t nb) = 0;
  // y[i] = w * x[i] (add: y[i] += w * x[i]) for n floats of the rank's
  // memory; x may equal y.
  virtual void scale_add(float* y, const float* x, size_t n, float w, bool add) = 0;
  // y[i] = sum over c of w[c] * x[c * n + i] for n floats, added in order
  // c = 0, 1, ... starting from +0 (each product rounded, then added): the
  // deterministic runtime's chunks summed in chunk order.
  virtual void weighted_sum(float* y, const float* x, size_t n, std::span<const float> w) = 0;
  virtual void zero(void* p, size_t nb) = 0;

  // The stream the calls run on (a cudaStream_t), nullptr on the CPU.
  virtual CUstream_st* stream() const = 0;
  // Page-locks host memory that inputs will be copied from (false where it
  // does not apply or was refused: copies then work, only slower); unpin
  // before the memory is unmapped.
  virtual bool pin_host(const void* p, size_t bytes) = 0;
  virtual void unpin_host(const void* p) noexcept = 0;
  // Timing marks on the rank's streams for the timeline's GPU tracks
  // (cuda::GpuMarks), made on the first request; null where the rank has
  // no device stream (the CPU: its host track is the whole story).
  virtual cuda::GpuMarks* gpu_marks() { return nullptr; }
};

// The rank's executor for `device` (BackendError where the backend is not
// built or has no device).
std::unique_ptr<Executor> make_executor(const Graph& g, const ExecutorOptions& opts);

}  // namespace synk::exec
