// exec/cuda/executor.hpp — a function compiled for one GPU and one batch
// size, and the code that enqueues its work on a stream.
//
// The planner (exec/plan/plan.hpp) does the device-independent part:
// resolved shapes, the schedule, kernel geometry, fusion, and the
// liveness-based placement of every value in one arena. This layer adds
// what the device needs on top of that plan: a convolution workspace sized
// for batched im2col, arena slots for the function inputs (copied in before
// each call, so a captured CUDA graph's pointers stay valid), for update
// staging and for output snapshots, and the constants in device memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "exec/plan/plan.hpp"
#include "exec/cuda/handles.hpp"
#include "synk/cuda_session.hpp"  // CudaRankSumFn

namespace synk::cuda {

struct CudaPlan {
  plan::Plan p;                         // schedule, shapes, arena offsets
  int64_t work_offset = 0;              // conv workspace (bytes into the arena)
  std::vector<int64_t> conv_chunk;      // per step: images per im2col chunk
  std::vector<int64_t> input_offset;    // per function input; -1: not read by the plan, never copied
  std::vector<int64_t> input_bytes;     // per function input: its slot's size (0 when not placed)
  std::vector<int64_t> stage_offset;    // per p.copies entry, -1: not staged
  std::vector<int64_t> snapshot_offset; // per output, -1: read in place
  std::vector<uint64_t> dropout_key;    // per step: call-independent key part
  int64_t arena_bytes = 0;
  DeviceBuffer consts;
  bool has_xent = false;                // reads the bad-label word after a call
  // Has rank_sum steps: they call the session's combiner (an NCCL or
  // host-staged all-reduce) as they are enqueued, which a captured graph
  // could not replay, so the call runs without graphs.
  bool has_rank_sum = false;
  // Embedding steps: one bad-index word each (shape::bad_index_word, all
  // ones when none) in index_check, read after every call and reset after
  // a bad one. index_slot: per step, its word (-1: not an embedding step).
  std::vector<int32_t> index_slot;
  std::vector<size_t> index_steps;      // the steps, in word order
  DeviceBuffer index_check;
  bool warm = false;                    // ran once eagerly (before capture)
  GraphExec exec;                       // captured work (graphs on)
  uint64_t exec_gen = 0;                // arena generation it was captured for
  // A call that hands outputs over while it runs (CudaFunction::call_into
  // with ready) runs the steps in segments, the output copies between them:
  // segment i ends with step seg_last[i], the last one with the plan's end
  // and the tail; one captured graph each (graphs on).
  std::vector<int64_t> last_steps;      // plan::output_last_steps, made on first use
  std::vector<size_t> seg_last;         // the splits the graphs below were captured for
  std::vector<GraphExec> segs;
  uint64_t segs_gen = 0;
};

// What one call's work is enqueued with.
struct ExecContext {
  cudaStream_t stream = nullptr;
  const Blas* blas = nullptr;
  uint8_t* arena = nullptr;
  const unsigned long long* counter = nullptr;  // this call's number, for dropout (device)
  unsigned long long* bad_row = nullptr;  // first out-of-range label row (device)
  const std::string* function = nullptr;  // for error messages
  bool sync_each_step = false;
  const CudaRankSumFn* rank_sum = nullptr;  // rank_sum steps; null or empty: one rank
};

// The planner options CUDA plans are compiled with: the process-wide
// defaults (plan::default_compile_options) with the CPU-only switches forced
// off, since this executor runs no fused elementwise groups and binds no
// outputs to caller buffers.
plan::CompileOptions plan_options();

// Device layout of a compiled plan; throws BackendError for a plan with
// steps or locations only the CPU executor runs (not compiled with
// plan_options()). Allocates the constants on the current device and
// uploads them on `stream`, the stream the plan's work is enqueued on.
CudaPlan make_cuda_plan(plan::Plan p, const std::vector<Node>& nodes, const FunctionDef& def, uint64_t seed,
                        int rank, cudaStream_t stream);

// Points p.ptr at this call's storage: arena, input slots, variables
// (var_ptr by node id), constants.
void bind(CudaPlan& cp, uint8_t* arena, void* const* var_ptr);

// Enqueues the whole call after the inputs and the call's dropout counter
// (ExecContext::counter) are in place: every step, the output snapshots and
// the update copies. Errors name the function, op and node.
void enqueue(CudaPlan& cp, const std::vector<Node>& nodes, const ExecContext& cx);
// The same in parts: steps [first, end), then the tail (the output
// snapshots and the update copies) once after the last step.
void enqueue_steps(CudaPlan& cp, const ExecContext& cx, size_t first, size_t end);
void enqueue_tail(CudaPlan& cp, const std::vector<Node>& nodes, const ExecContext& cx);

// Test-only (tests/test_cuda_exec.cpp): when set, a call that captures its
// segments' graphs calls it inside each segment's capture, before the
// segment's work, with the segment's index; it may throw, to check that a
// capture failing midway leaves no partial set of graphs behind. Never set
// by the library.
extern void (*test_before_segment_capture)(size_t segment);

}  // namespace synk::cuda
