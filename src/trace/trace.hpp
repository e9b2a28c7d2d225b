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

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
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
  stall,        // the master: some ranks waited stall_after for others (a stall report)
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

// ---- what a rank is doing now (the stall report) -------------------------------
// Every rank keeps its open spans, innermost last, in a board entry of
// shared memory (the runtime's control block: WorkerSlot::doing) that the
// master's stall watcher reads from another thread while the rank runs:
// a span is a few relaxed stores, no clock read, no system call. The
// entry is a seqlock: `seq` is odd while it changes, and every change
// bumps it, so the watcher also learns since when a rank has done what it
// does (it notes the time whenever seq moved).
constexpr int kOpenSpans = 5;
struct Doing {
  uint16_t kind;
  uint16_t pad;
  int32_t fn;
  uint64_t call;
};
struct Activity {
  uint32_t seq;     // even: stable; odd: changing
  uint32_t depth;   // open spans (the first kOpenSpans are kept)
  int64_t detail;   // of the innermost span: a bucket or (first) job index, -1: none
  int64_t detail_end;  // a chunk of jobs: one past its last; else detail + 1
  Doing open[kOpenSpans];
};
static_assert(sizeof(Activity) == 104);
// This process's entry (null: none, e.g. a Session outside a runtime).
extern Activity* g_activity;

// A snapshot of an entry read by another thread (read_activity).
struct ActivityView {
  uint32_t seq = 0;
  uint32_t depth = 0;
  int64_t detail = -1;
  int64_t detail_end = -1;
  Doing open[kOpenSpans] = {};
  // The innermost kept span, nullptr when none is open.
  const Doing* top() const { return depth == 0 ? nullptr : &open[std::min<uint32_t>(depth, kOpenSpans) - 1]; }
};
// Consistent copy of `a` (retries while the rank changes it; gives up
// after a few tries with what it read, good enough for a report).
ActivityView read_activity(const Activity& a) noexcept;

namespace board {
inline void begin_change(Activity* a) noexcept {
  std::atomic_ref<uint32_t>(a->seq).fetch_add(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
}
inline void end_change(Activity* a) noexcept {
  std::atomic_ref<uint32_t>(a->seq).fetch_add(1, std::memory_order_release);
}
// Returns the depth the span was opened at (its pop restores it).
inline uint32_t push(Activity* a, Kind k, uint64_t call, int32_t fn) noexcept {
  const uint32_t d = std::atomic_ref<uint32_t>(a->depth).load(std::memory_order_relaxed);
  begin_change(a);
  if (d < kOpenSpans) {
    std::atomic_ref<uint16_t>(a->open[d].kind).store(static_cast<uint16_t>(k), std::memory_order_relaxed);
    std::atomic_ref<int32_t>(a->open[d].fn).store(fn, std::memory_order_relaxed);
    std::atomic_ref<uint64_t>(a->open[d].call).store(call, std::memory_order_relaxed);
  }
  std::atomic_ref<int64_t>(a->detail).store(-1, std::memory_order_relaxed);
  std::atomic_ref<uint32_t>(a->depth).store(d + 1, std::memory_order_relaxed);
  end_change(a);
  return d;
}
inline void pop(Activity* a, uint32_t depth) noexcept {
  begin_change(a);
  std::atomic_ref<int64_t>(a->detail).store(-1, std::memory_order_relaxed);
  std::atomic_ref<uint32_t>(a->depth).store(depth, std::memory_order_relaxed);
  end_change(a);
}
}  // namespace board

// The innermost span's detail (the bucket a gradient all-reduce sends, the
// jobs [detail, end) a map runs; -1: none), for the stall report.
inline void set_detail(int64_t detail, int64_t end = -2) noexcept {
  if (Activity* a = g_activity) {
    board::begin_change(a);
    std::atomic_ref<int64_t>(a->detail).store(detail, std::memory_order_relaxed);
    std::atomic_ref<int64_t>(a->detail_end).store(end == -2 ? detail + 1 : end, std::memory_order_relaxed);
    board::end_change(a);
  }
}

// ---- each training step's phases (Runtime::stats, the straggler report) --------
// Every rank keeps, for its last kStepRing training steps, the time of each
// phase in a ring of shared memory the master reads (StepLogs below). The
// phases are the exclusive times of the step's spans (a bucket's all-reduce
// inside the backward pass counts as all-reduce, not as compute), and idle
// is the time since the rank's previous step ended. Only training steps
// read the clock for it: a plain call pays nothing.
enum class Phase : uint8_t { inputs, compute, all_reduce, update, idle, count_ };
constexpr int kPhases = static_cast<int>(Phase::count_);
const char* phase_name(Phase p) noexcept;
constexpr uint64_t kStepRing = 4096;
struct alignas(64) RankSteps {
  uint64_t steps;  // recorded so far (the ring holds the last kStepRing)
  int32_t pid;
  int32_t pad[13];
  float ms[kStepRing][kPhases];  // per step and phase, milliseconds (idle < 0: none, the first step)
};

// The open step of this process (null outside a training step): exclusive
// time per span kind, with a small stack of open spans.
struct StepClock {
  static constexpr int kStack = 8;
  int64_t excl[static_cast<int>(Kind::count_)] = {};
  int64_t t0[kStack] = {}, child[kStack] = {};
  int depth = 0;
  void begin(int64_t t) noexcept {
    if (depth < kStack) t0[depth] = t, child[depth] = 0;
    ++depth;
  }
  void end(Kind k, int64_t t) noexcept {
    if (--depth >= kStack || depth < 0) return;
    const int64_t dur = t - t0[depth];
    excl[static_cast<int>(k)] += dur - child[depth];
    if (depth > 0 && depth - 1 < kStack) child[depth - 1] += dur;
  }
};
extern StepClock* g_step;

// A training step on this rank, from construction to destruction: its
// spans' times go into `log` (null: nowhere, e.g. before the segment came).
class StepTimer {
 public:
  explicit StepTimer(RankSteps* log) noexcept;
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;

 private:
  RankSteps* log_;
  StepClock clock_;
  int64_t start_ = 0;
};
// This process's ring (set where it records; StepLogs::attach).
extern RankSteps* g_steps;
void detach_steps() noexcept;

// The segment of every rank's ring (made by the master at fork()).
class StepLogs {
 public:
  explicit StepLogs(int ranks);
  const comm::SharedSegment& segment() const { return seg_; }
  // Makes this process record into rank `rank`'s ring of `seg` (g_steps).
  static RankSteps* attach(void* seg, size_t bytes, int rank, int ranks);
  void attach(int rank) { attach(seg_.data(), seg_.size(), rank, ranks_); }
  RankSteps* rank(int r) const;
  int ranks() const { return ranks_; }

 private:
  comm::SharedSegment seg_;
  int ranks_ = 0;
};

// A span from construction to destruction (or end()): on the timeline when
// it records, on this rank's board entry while open, and in the open
// training step's phases.
class Span {
 public:
  Span(Kind k, uint64_t call = 0, int32_t fn = -1) noexcept : k_(k), fn_(fn), call_(call) {
    if (g_recorder.log || g_step) t0_ = now_ns();
    if (StepClock* s = g_step) {
      s->begin(t0_);
      step_ = s;
    }
    if (Activity* a = g_activity) depth_ = board::push(a, k, call, fn);
  }
  ~Span() { end(); }
  void end() noexcept {
    if (t0_ >= 0) {
      const int64_t t1 = now_ns();
      if (g_recorder.log) record(k_, t0_, t1, call_, fn_);
      if (step_ && step_ == g_step) step_->end(k_, t1);
    }
    t0_ = -1;
    step_ = nullptr;
    if (depth_ != kClosed) {
      if (Activity* a = g_activity) board::pop(a, depth_);
      depth_ = kClosed;
    }
  }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

 private:
  static constexpr uint32_t kClosed = UINT32_MAX;
  Kind k_;
  int32_t fn_;
  uint64_t call_;
  int64_t t0_ = -1;
  uint32_t depth_ = kClosed;
  StepClock* step_ = nullptr;
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
  // extra: events of rank 0's host track recorded apart from its log (the
  // stall reports, made by the master's watcher thread).
  void write(const std::string& path, const std::vector<std::string>& fn_names, int first_rank = 0,
             const std::string& node = "", std::span<const Event> extra = {}) const;

 private:
  comm::SharedSegment seg_;
  int ranks_ = 0;
  uint64_t events_ = 0;
};

// Stops this process's recording (close(); a worker never needs to).
void detach() noexcept;

}  // namespace synk::detail::trace
