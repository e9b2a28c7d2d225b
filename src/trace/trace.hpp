// src/trace/trace.hpp — the runtime's timeline (RuntimeOptions::trace,
// SYNK_TRACE): what every rank spent its time on, written at close() as a
// Chrome trace-event JSON file that Perfetto (ui.perfetto.dev) and
// chrome://tracing open, one track per rank, and on a CUDA rank two more:
// its compute stream and its comm's stream, as the GPU ran them
// (cuda::GpuMarks, flushed into the rank's log after each training step).
//
// Why shared memory: every rank appends fixed-size events to its own log in
// one segment the master made and shared like a Data segment, so recording
// is a clock read and a store (no I/O, no lock, no message), and the master
// writes the file from all logs at close(), with what a worker recorded
// before it died. Off (no path given), every span is one test of a null
// pointer.
//
//   { trace::Span s(trace::Kind::compute, call_no, fn); ... }  // one span
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "comm/shm.hpp"

namespace synk::detail::trace {

// What a span is; its name in the file is kind_name(k).
enum class Kind : uint16_t {
  wait,         // a worker waiting for the next command
  command,      // a worker running one command (the call, collective, ... inside)
  call,         // the master: one call of a distributed function, start to end
  send,         // the master: the call checked, encoded, published
  share,        // a rank's share of a call
  inputs,       // gathering the input rows of a slice (index batches copy them)
  compute,      // the compiled function on a slice (forward, backward)
  all_reduce,   // the training step's gradient all-reduce
  update,       // the training step's update function
  results,      // a worker writing its results
  wait_ranks,   // the master waiting for the workers
  combine,      // the master combining the ranks' results
  collective,   // variable collectives
  map,          // map jobs
  distribute,   // compiling the functions
  count_
};
const char* kind_name(Kind k) noexcept;

struct Event {
  int64_t t0, t1;    // CLOCK_MONOTONIC ns
  uint64_t call;     // the runtime's call number (0: none)
  int32_t fn;        // function (definition index), -1: none
  uint16_t kind;
  uint16_t lane;     // 0: the rank's host track; cuda::GpuMarks::Lane: a GPU stream's
};
static_assert(sizeof(Event) == 32);

// One rank's log in the segment.
struct alignas(64) RankLog {
  uint64_t count;    // events appended (may exceed the capacity: the rest were dropped)
  int32_t pid;
  int32_t pad[13];
};

// This process's log: set in the rank that records (null: tracing off).
struct Recorder {
  RankLog* log = nullptr;
  Event* ev = nullptr;
  uint64_t cap = 0;
};
extern Recorder g_recorder;

int64_t now_ns() noexcept;

inline void record(Kind k, int64_t t0, int64_t t1, uint64_t call, int32_t fn, uint16_t lane = 0) noexcept {
  Recorder& r = g_recorder;
  const uint64_t i = r.log->count++;
  if (i < r.cap) r.ev[i] = Event{t0, t1, call, fn, static_cast<uint16_t>(k), lane};
}
// The same for a span measured on a GPU stream (a cuda::GpuMarks::Sink).
void record_gpu(uint16_t kind, int64_t t0, int64_t t1, uint64_t call, int32_t fn, uint16_t lane) noexcept;
constexpr uint16_t kLanes = 3;  // host, compute stream, comm stream

// A span from construction to destruction (or end()).
class Span {
 public:
  Span(Kind k, uint64_t call = 0, int32_t fn = -1) noexcept : k_(k), fn_(fn), call_(call) {
    if (g_recorder.log) t0_ = now_ns();
  }
  ~Span() { end(); }
  void end() noexcept {
    if (g_recorder.log && t0_ >= 0) record(k_, t0_, now_ns(), call_, fn_);
    t0_ = -1;
  }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  Kind k_;
  int32_t fn_;
  uint64_t call_;
  int64_t t0_ = -1;
};

inline bool on() noexcept { return g_recorder.log != nullptr; }

// The segment of all ranks' logs (made by the master at fork()).
class Logs {
 public:
  // `events` per rank; the segment is sparse until written.
  Logs(int ranks, uint64_t events);
  const comm::SharedSegment& segment() const { return seg_; }
  // Makes this process record into rank `rank`'s log of `seg` (a worker
  // attaches to the segment it was sent).
  static void attach(void* seg, size_t bytes, int rank, int ranks);
  void attach(int rank) { attach(seg_.data(), seg_.size(), rank, ranks_); }
  // Writes the Chrome trace of every rank's log to `path`; fn_names name
  // the functions; the tracks are named by global rank (first_rank + the
  // log's rank) and the process after `node` ("" on one machine). Rank r's
  // host track is tid r; its GPU streams' tracks (where it recorded any)
  // are tid lane * ranks + r, shown right after it. Throws BackendError
  // naming the file.
  void write(const std::string& path, const std::vector<std::string>& fn_names, int first_rank = 0,
             const std::string& node = "") const;

 private:
  comm::SharedSegment seg_;
  int ranks_ = 0;
  uint64_t events_ = 0;
};

// Stops this process's recording (close(); a worker never needs to).
void detach() noexcept;

}  // namespace synk::detail::trace
