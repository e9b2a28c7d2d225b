// src/runtime/stall.cpp — the stall watcher (RuntimeOptions::stall_after_s):
// while a call runs, a thread of the master samples every rank's board
// entry (what its open spans are: trace.hpp's Activity, in the control
// block's WorkerSlot::doing) and whether the rank has finished the
// command, and when some ranks have waited stall_after_s for others it
// reports the late ones by name, phase and process state.
//
// Why a thread of its own: the master may itself be blocked (in its rank's
// gradient all-reduce, or sleeping on a worker's futex) when the report is
// due. Why sampling: the ranks pay only the board's stores per span; the
// watcher learns since when a rank does what it does by noting the time
// whenever the entry's sequence number moved (so a report's durations are
// good to one sampling period, at most a second).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "comm/futex.hpp"
#include "runtime/core.hpp"

namespace tr = synk::detail::trace;

namespace synk::detail {

namespace {

template <class T> std::atomic_ref<T> at(T& x) { return std::atomic_ref<T>(x); }

bool is_comm(uint16_t k) {
  return k == static_cast<uint16_t>(tr::Kind::all_reduce) || k == static_cast<uint16_t>(tr::Kind::collective);
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

// Where a rank stands in the command being watched.
enum class Stand : uint8_t { late, waiting };

struct Sample {
  tr::ActivityView v;
  bool done = false;  // a worker that finished the command
  Stand stand = Stand::late;
  bool in_comm = false;
};

}  // namespace

void RuntimeCore::start_stall_watcher() {
  stall_stop = false;
  stall_thread = std::thread([this] { stall_watch(); });
}

void RuntimeCore::stop_stall_watcher() noexcept {
  if (!stall_thread.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(stall_mu);
    stall_stop = true;
  }
  stall_cv.notify_all();
  stall_thread.join();
}

void RuntimeCore::stall_watch() {
  const double after = opts.stall_after_s;
  const auto period = std::chrono::duration<double>(std::clamp(after / 4, 0.02, 1.0));
  const int64_t after_ns = static_cast<int64_t>(after * 1e9);
  struct Seen {
    uint64_t key = ~uint64_t{0};
    int64_t since = 0;
  };
  std::vector<Seen> seen(static_cast<size_t>(n));
  std::vector<Sample> now_s(static_cast<size_t>(n));
  uint32_t cmd = ~0u;
  int64_t stall_since = -1, next_report = 0;
  int repeat = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(stall_mu);
      if (stall_cv.wait_for(lock, period, [&] { return stall_stop; })) return;
    }
    if (failed.load() || !busy.load(std::memory_order_acquire) || !cb) {
      stall_since = -1;
      continue;
    }
    const int64_t now = comm::monotonic_ns();
    const uint32_t s = at(cb->seq).load(std::memory_order_acquire);
    if (s != cmd) {
      cmd = s;
      stall_since = -1;
    }
    bool any_late = false, any_waiting = false, any_comm = false;
    for (int r = 0; r < n; ++r) {
      Sample& x = now_s[static_cast<size_t>(r)];
      WorkerSlot& slot = cb->slots[r];
      x.v = tr::read_activity(slot.doing);
      x.done = r > 0 && at(slot.done).load(std::memory_order_acquire) == s;
      const uint64_t key = (static_cast<uint64_t>(x.v.seq) << 33) | (static_cast<uint64_t>(s) << 1) | x.done;
      Seen& sn = seen[static_cast<size_t>(r)];
      if (sn.key != key) sn = {key, now};
      const tr::Doing* top = x.v.top();
      x.in_comm = top && is_comm(top->kind);
      const bool map_idle = top && top->kind == static_cast<uint16_t>(tr::Kind::map) && x.v.detail < 0;
      if (r == 0)
        // The master waits for its workers in wait_ranks, or outside any
        // span of its own (a variable collective's wait).
        x.stand = x.in_comm || !top || top->kind == static_cast<uint16_t>(tr::Kind::wait_ranks) || map_idle
                      ? Stand::waiting
                      : Stand::late;
      else
        x.stand = x.done || x.in_comm || map_idle ? Stand::waiting : Stand::late;
      any_late |= x.stand == Stand::late;
      any_waiting |= x.stand == Stand::waiting;
      any_comm |= x.in_comm;
    }
    // A stall: ranks wait while others are late, or every rank is stuck
    // inside a collective (waiting for a peer on another node, or for one
    // that skipped it).
    if (!(any_waiting && (any_late || any_comm))) {
      stall_since = -1;
      continue;
    }
    if (stall_since < 0) {
      stall_since = now;
      next_report = 0;
      repeat = 0;
    }
    int64_t waited = 0;
    for (int r = 0; r < n; ++r)
      if (now_s[static_cast<size_t>(r)].stand == Stand::waiting)
        waited = std::max(waited, now - seen[static_cast<size_t>(r)].since);
    if (waited < after_ns || now < next_report) continue;

    // ---- the report ------------------------------------------------------------
    std::vector<std::string> names;
    {
      std::lock_guard<std::mutex> lock(stall_mu);
      names = fn_names;
    }
    auto fn_text = [&](int32_t fn) {
      return fn >= 0 && static_cast<size_t>(fn) < names.size() ? names[static_cast<size_t>(fn)] : std::string();
    };
    StallReport rep;
    rep.waited_s = static_cast<double>(waited) / 1e9;
    rep.repeat = repeat;
    // The master's outermost span is the call the ranks are in.
    int32_t what_fn = -1;
    uint64_t what_call = 0;
    rep.what = "a runtime call";
    if (now_s[0].v.depth > 0) {
      const tr::Doing& d = now_s[0].v.open[0];
      what_fn = d.fn;
      what_call = d.call;
      const std::string f = fn_text(d.fn);
      if (d.kind == static_cast<uint16_t>(tr::Kind::call) && !f.empty())
        rep.what = "function '" + f + "' call #" + std::to_string(d.call);
      else
        rep.what = std::string(tr::kind_name(static_cast<tr::Kind>(d.kind))) +
                   (d.call ? " (call #" + std::to_string(d.call) + ")" : "");
    }
    for (int r = 0; r < n; ++r) {
      const Sample& x = now_s[static_cast<size_t>(r)];
      RankActivity a;
      a.rank = base + r;
      a.node = node;
      a.pid = static_cast<int>(r < static_cast<int>(pids.size()) ? pids[static_cast<size_t>(r)] : 0);
      if (r == 0) a.pid = static_cast<int>(master_pid);
      const tr::Doing* top = x.v.top();
      if (x.done) {
        a.doing = "done";
      } else if (top) {
        a.doing = tr::kind_name(static_cast<tr::Kind>(top->kind));
        a.function = fn_text(top->fn);
        a.call = top->call;
        a.detail = x.v.detail;
        a.detail_end = x.v.detail >= 0 ? x.v.detail_end : -1;
      } else {
        a.doing = r == 0 ? "waiting for its workers" : "the command, not started yet";
      }
      a.in_comm = x.in_comm;
      a.stopped = r > 0 && process_state(static_cast<pid_t>(a.pid)).rfind("stopped", 0) == 0;
      a.seconds = static_cast<double>(now - seen[static_cast<size_t>(r)].since) / 1e9;
      (x.stand == Stand::late ? rep.late : rep.waiting).push_back(std::move(a));
    }
    auto describe = [&](const RankActivity& a) {
      std::string t = "rank " + std::to_string(a.rank) + (nodes > 1 ? " (node " + std::to_string(a.node) + ", " : " (") +
                      "pid " + std::to_string(a.pid) + ")";
      if (a.doing == "done")
        t += a.stopped ? ": stopped, done" : ": done";
      else if (a.doing == tr::kind_name(tr::Kind::wait_ranks) || a.doing == "waiting for its workers")
        t += ": waiting for its workers";
      else
        t += (a.stopped ? ": stopped in " : ": in ") + a.doing;
      if (a.detail >= 0) {
        if (a.doing == tr::kind_name(tr::Kind::all_reduce))
          t += " (bucket " + std::to_string(a.detail) + ")";
        else if (a.detail_end > a.detail + 1)
          t += " (jobs " + std::to_string(a.detail) + " to " + std::to_string(a.detail_end - 1) + ")";
        else
          t += " (job " + std::to_string(a.detail) + ")";
      }
      if (!a.function.empty()) t += " of '" + a.function + "'";
      if (a.call) t += " call #" + std::to_string(a.call);
      t += " for " + seconds_text(a.seconds);
      return t;
    };
    std::string text = "synk: stall: " + rep.what + ": ";
    if (!rep.late.empty()) {
      text += "ranks have waited " + seconds_text(rep.waited_s) + " for ";
      for (size_t i = 0; i < rep.late.size(); ++i) text += (i ? "; " : "") + describe(rep.late[i]);
    } else {
      text += "every rank of this node has waited " + seconds_text(rep.waited_s) +
              " inside a collective (for a rank of another node, or one that left it)";
    }
    text += ". Waiting: ";
    for (size_t i = 0; i < rep.waiting.size(); ++i) text += (i ? "; " : "") + describe(rep.waiting[i]);
    if (repeat > 0) text += " (report " + std::to_string(repeat + 1) + ")";
    rep.text = text;
    std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
    if (trace) {
      std::lock_guard<std::mutex> lock(stall_mu);
      stall_events.push_back(tr::Event{now - waited, now, what_call, what_fn,
                                          static_cast<uint16_t>(tr::Kind::stall), 0});
    }
    if (opts.on_stall) {
      try {
        opts.on_stall(rep);
      } catch (...) {  // a callback's exception has no caller to reach: the call goes on
      }
    }
    ++repeat;
    next_report = now + after_ns;
  }
}

}  // namespace synk::detail
