// src/trace/trace.cpp — the timeline's logs and its Chrome trace-event
// file (trace/trace.hpp).
#include "trace/trace.hpp"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "synk/error.hpp"

namespace synk::detail::trace {

Recorder g_recorder;
Activity* g_activity = nullptr;
StepClock* g_step = nullptr;
RankSteps* g_steps = nullptr;

const char* phase_name(Phase p) noexcept {
  switch (p) {
    case Phase::inputs: return "gather inputs";
    case Phase::compute: return "forward+backward";
    case Phase::all_reduce: return "gradient all-reduce";
    case Phase::update: return "update";
    case Phase::idle: return "idle";
    case Phase::count_: break;
  }
  return "?";
}

namespace {
int64_t g_last_step_end = -1;  // this process's previous training step (idle time)
}  // namespace

StepTimer::StepTimer(RankSteps* log) noexcept : log_(log) {
  if (!log_) return;
  start_ = now_ns();
  clock_.begin(start_);
  g_step = &clock_;
}

StepTimer::~StepTimer() {
  if (!log_) return;
  g_step = nullptr;
  const int64_t end = now_ns();
  auto ms = [](int64_t ns) { return static_cast<float>(static_cast<double>(ns) / 1e6); };
  const uint64_t k = std::atomic_ref<uint64_t>(log_->steps).load(std::memory_order_relaxed);
  float* row = log_->ms[k % kStepRing];
  const auto& e = clock_.excl;
  row[static_cast<int>(Phase::inputs)] = ms(e[static_cast<int>(Kind::inputs)]);
  row[static_cast<int>(Phase::compute)] = ms(e[static_cast<int>(Kind::compute)]);
  row[static_cast<int>(Phase::all_reduce)] = ms(e[static_cast<int>(Kind::all_reduce)]);
  row[static_cast<int>(Phase::update)] = ms(e[static_cast<int>(Kind::update)]);
  row[static_cast<int>(Phase::idle)] = g_last_step_end < 0 ? -1.f : ms(start_ - g_last_step_end);
  g_last_step_end = end;
  std::atomic_ref<uint64_t>(log_->steps).store(k + 1, std::memory_order_release);
}

namespace {
struct StepHeader {
  uint64_t ranks;
  uint64_t pad[7];
};
static_assert(sizeof(StepHeader) == 64);
}  // namespace

StepLogs::StepLogs(int ranks) : ranks_(ranks) {
  seg_ = comm::SharedSegment::create(sizeof(StepHeader) + static_cast<size_t>(ranks) * sizeof(RankSteps), "synk-steps");
  static_cast<StepHeader*>(seg_.data())->ranks = static_cast<uint64_t>(ranks);
}

RankSteps* StepLogs::rank(int r) const {
  return reinterpret_cast<RankSteps*>(static_cast<uint8_t*>(seg_.data()) + sizeof(StepHeader)) + r;
}

RankSteps* StepLogs::attach(void* seg, size_t bytes, int rank, int ranks) {
  const auto* h = static_cast<const StepHeader*>(seg);
  if (bytes < sizeof(StepHeader) + static_cast<size_t>(ranks) * sizeof(RankSteps) ||
      h->ranks != static_cast<uint64_t>(ranks) || rank < 0 || rank >= ranks)
    throw FormatError("corrupt step-statistics segment (" + std::to_string(bytes) + " bytes)");
  RankSteps* r = reinterpret_cast<RankSteps*>(static_cast<uint8_t*>(seg) + sizeof(StepHeader)) + rank;
  r->pid = static_cast<int32_t>(::getpid());
  g_steps = r;
  g_last_step_end = -1;
  return r;
}

void detach_steps() noexcept {
  g_steps = nullptr;
  g_last_step_end = -1;
}

ActivityView read_activity(const Activity& a) noexcept {
  auto& m = const_cast<Activity&>(a);
  ActivityView v;
  for (int tries = 0; tries < 64; ++tries) {
    const uint32_t s0 = std::atomic_ref<uint32_t>(m.seq).load(std::memory_order_acquire);
    v.seq = s0;
    v.depth = std::atomic_ref<uint32_t>(m.depth).load(std::memory_order_relaxed);
    v.detail = std::atomic_ref<int64_t>(m.detail).load(std::memory_order_relaxed);
    v.detail_end = std::atomic_ref<int64_t>(m.detail_end).load(std::memory_order_relaxed);
    for (int i = 0; i < kOpenSpans; ++i) {
      v.open[i].kind = std::atomic_ref<uint16_t>(m.open[i].kind).load(std::memory_order_relaxed);
      v.open[i].fn = std::atomic_ref<int32_t>(m.open[i].fn).load(std::memory_order_relaxed);
      v.open[i].call = std::atomic_ref<uint64_t>(m.open[i].call).load(std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if ((s0 & 1) == 0 && std::atomic_ref<uint32_t>(m.seq).load(std::memory_order_relaxed) == s0) break;
  }
  return v;
}

namespace {

// The segment: this header, then per rank a RankLog and its events.
struct Header {
  uint64_t ranks, events;
  uint64_t pad[6];
};
static_assert(sizeof(Header) == 64);

size_t rank_stride(uint64_t events) { return sizeof(RankLog) + events * sizeof(Event); }

RankLog* rank_log(void* seg, uint64_t events, int rank) {
  return reinterpret_cast<RankLog*>(static_cast<uint8_t*>(seg) + sizeof(Header) +
                                    static_cast<size_t>(rank) * rank_stride(events));
}

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

}  // namespace

const char* kind_name(Kind k) noexcept {
  switch (k) {
    case Kind::wait: return "wait for command";
    case Kind::command: return "command";
    case Kind::call: return "call";
    case Kind::send: return "send call";
    case Kind::share: return "rank share";
    case Kind::inputs: return "gather inputs";
    case Kind::compute: return "forward+backward";
    case Kind::all_reduce: return "gradient all-reduce";
    case Kind::update: return "update";
    case Kind::results: return "write results";
    case Kind::wait_ranks: return "wait for workers";
    case Kind::combine: return "combine results";
    case Kind::collective: return "variable collectives";
    case Kind::map: return "map jobs";
    case Kind::distribute: return "distribute";
    case Kind::stall: return "stall report";
    case Kind::count_: break;
  }
  return "?";
}

void record_gpu(uint16_t kind, int64_t t0, int64_t t1, uint64_t call, int32_t fn, uint16_t lane) noexcept {
  if (g_recorder.log && kind < static_cast<uint16_t>(Kind::count_) && lane < kLanes)
    record(static_cast<Kind>(kind), t0, t1, call, fn, lane);
}

int64_t now_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Logs::Logs(int ranks, uint64_t events) : ranks_(ranks), events_(events) {
  seg_ = comm::SharedSegment::create(sizeof(Header) + static_cast<size_t>(ranks) * rank_stride(events), "synk-trace");
  auto* h = static_cast<Header*>(seg_.data());
  h->ranks = static_cast<uint64_t>(ranks);
  h->events = events;
}

void Logs::attach(void* seg, size_t bytes, int rank, int ranks) {
  const auto* h = static_cast<const Header*>(seg);
  if (bytes < sizeof(Header) || h->ranks != static_cast<uint64_t>(ranks) || rank < 0 || rank >= ranks ||
      bytes < sizeof(Header) + static_cast<size_t>(ranks) * rank_stride(h->events))
    throw FormatError("corrupt trace segment (" + std::to_string(bytes) + " bytes)");
  RankLog* log = rank_log(seg, h->events, rank);
  log->pid = static_cast<int32_t>(::getpid());
  g_recorder.ev = reinterpret_cast<Event*>(log + 1);
  g_recorder.cap = h->events;
  g_recorder.log = log;
}

void detach() noexcept { g_recorder = Recorder{}; }

void Logs::write(const std::string& path, const std::vector<std::string>& fn_names, int first_rank,
                 const std::string& node, std::span<const Event> extra) const {
  void* seg = seg_.data();
  int64_t t_min = INT64_MAX;
  for (const Event& e : extra) t_min = std::min(t_min, e.t0);
  for (int r = 0; r < ranks_; ++r) {
    const RankLog* log = rank_log(seg, events_, r);
    const auto* ev = reinterpret_cast<const Event*>(log + 1);
    const uint64_t n = std::min(log->count, events_);
    for (uint64_t i = 0; i < n; ++i) t_min = std::min(t_min, ev[i].t0);
  }
  if (t_min == INT64_MAX) t_min = 0;
  std::string out;
  out.reserve(1 << 16);
  out += "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  out += "{\"ph\":\"M\",\"pid\":1,\"tid\":0,\"name\":\"process_name\",\"args\":{\"name\":\"synk runtime" +
         (node.empty() ? std::string() : ", " + node) + "\"}}";
  uint64_t dropped = 0;
  char buf[256];
  for (int r = 0; r < ranks_; ++r) {
    const RankLog* log = rank_log(seg, events_, r);
    const uint64_t n = std::min(log->count, events_);
    dropped += log->count - n;
    const auto* ev = reinterpret_cast<const Event*>(log + 1);
    bool lanes[kLanes] = {true, false, false};  // the host track always
    for (uint64_t i = 0; i < n; ++i)
      if (ev[i].lane < kLanes) lanes[ev[i].lane] = true;
    char host[64];
    std::snprintf(host, sizeof host, "%s (pid %d)", r == 0 ? " master" : "", static_cast<int>(log->pid));
    const char* const lane_names[kLanes] = {host, " GPU compute stream", " GPU comm stream"};
    for (int lane = 0; lane < kLanes; ++lane) {
      if (!lanes[lane]) continue;
      const int tid = lane * ranks_ + r;
      std::snprintf(buf, sizeof buf,
                    ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"rank "
                    "%d%s\"}}",
                    tid, first_rank + r, lane_names[lane]);
      out += buf;
      std::snprintf(buf, sizeof buf,
                    ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"name\":\"thread_sort_index\",\"args\":{\"sort_"
                    "index\":%d}}",
                    tid, r * kLanes + lane);
      out += buf;
    }
    auto emit = [&](const Event& e) {
      if (e.lane >= kLanes) return;
      const Kind k = e.kind < static_cast<uint16_t>(Kind::count_) ? static_cast<Kind>(e.kind) : Kind::count_;
      std::snprintf(buf, sizeof buf, ",\n{\"ph\":\"X\",\"pid\":1,\"tid\":%d,\"name\":\"%s\",\"ts\":%.3f,\"dur\":%.3f",
                    e.lane * ranks_ + r, kind_name(k), static_cast<double>(e.t0 - t_min) / 1e3,
                    static_cast<double>(std::max<int64_t>(0, e.t1 - e.t0)) / 1e3);
      out += buf;
      out += ",\"args\":{";
      bool comma = false;
      if (e.call) {
        std::snprintf(buf, sizeof buf, "\"call\":%" PRIu64, e.call);
        out += buf;
        comma = true;
      }
      if (e.fn >= 0 && static_cast<size_t>(e.fn) < fn_names.size()) {
        out += comma ? ",\"function\":" : "\"function\":";
        json_string(out, fn_names[static_cast<size_t>(e.fn)]);
      }
      out += "}}";
    };
    for (uint64_t i = 0; i < n; ++i) emit(ev[i]);
    if (r == 0)
      for (const Event& e : extra) emit(e);
  }
  std::snprintf(buf, sizeof buf, "\n],\"otherData\":{\"ranks\":%d,\"dropped_events\":%" PRIu64 "}}\n", ranks_,
                dropped);
  out += buf;
  // Written next to the target and renamed: a reader never sees half a file.
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw BackendError("synk runtime: cannot write the trace '" + path + "': " + std::strerror(errno));
  const bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    throw BackendError("synk runtime: cannot write the trace '" + path + "': " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw BackendError("synk runtime: cannot write the trace '" + path + "': " + std::strerror(e));
  }
}

}  // namespace synk::detail::trace
