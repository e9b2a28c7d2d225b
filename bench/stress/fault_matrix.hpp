// bench/stress/fault_matrix.hpp — the runtime's fault matrix: every fault a
// worker or the master can suffer, injected at every point where it makes
// sense, each run in a fresh runtime inside a forked "harness" process that
// plays the master. Shared by tests/test_faults.cpp (one pass, asserted) and
// synk-stress (many passes, counted), so both check the same expectations.
//
// A case = a fault x a phase:
//   faults (in worker rank 1 of 3 ranks): SIGKILL, SIGSEGV, SIGSTOP (a hang:
//     only the timeout ends it), exit(0), an exception, out of memory
//     (RLIMIT_AS lowered, then an allocation fails);
//   phases: idle (signalled from outside between calls), mid-call,
//     mid-collective (all_reduce: the master is blocked in the CpuGroup),
//     mid-distribute (while the worker compiles the functions);
//   and the master itself receiving SIGINT, SIGTERM or SIGKILL while its
//     workers run a map.
// Faults inside a command are injected through the runtime's test hooks
// (detail::test_hooks(), called by the worker when it reads a command and
// before it compiles), armed through a MAP_SHARED page so only the measured
// command triggers them.
//
// Each case checks, in the harness: the exception type, rank, the message
// (signal / exit code / cause, and the call: "function 'f' call #", "all_reduce #",
// "distribute"), the time to raise (only against a generous bound:
// timeout + 5 s), what the runtime does next (still usable after an
// exception in a plain call or in distribute; otherwise every call refused),
// and after close(): no child process (zombies included) and no memfd
// segment in the harness. The parent checks that the harness ended as
// expected, that no process it started outlives it (the parent is a child
// subreaper, so orphans come back to it) and that /dev/shm holds no new
// synk entry. Everything is reported through one fixed-size record on a
// pipe plus the exit code.
#pragma once

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/core.hpp"
#include "runtime/fork_server.hpp"
#if SYNK_HAVE_NCCL
#include "comm/nccl.hpp"
#endif
#include "support/proc_probe.hpp"
#include "synk/synk.hpp"

namespace synk_faults {

enum class Fault : int { kill, segv, stop, exit0, throws, oom, master_sigint, master_sigterm, master_sigkill };
enum class Phase : int { idle, call, collective, distribute, busy };

inline const char* fault_name(Fault f) {
  switch (f) {
    case Fault::kill: return "SIGKILL";
    case Fault::segv: return "SIGSEGV";
    case Fault::stop: return "SIGSTOP (hang)";
    case Fault::exit0: return "exit(0)";
    case Fault::throws: return "exception";
    case Fault::oom: return "out of memory";
    case Fault::master_sigint: return "master SIGINT";
    case Fault::master_sigterm: return "master SIGTERM";
    case Fault::master_sigkill: return "master SIGKILL";
  }
  return "?";
}

inline const char* phase_name(Phase p) {
  switch (p) {
    case Phase::idle: return "idle";
    case Phase::call: return "mid-call";
    case Phase::collective: return "mid-collective";
    case Phase::distribute: return "mid-distribute";
    case Phase::busy: return "workers busy (map)";
  }
  return "?";
}

struct Case {
  Fault fault;
  Phase phase;
  std::string name() const { return std::string(fault_name(fault)) + " / " + phase_name(phase); }
  bool master() const { return fault >= Fault::master_sigint; }
  // An exception in a plain call or in distribute is reported and the
  // runtime stays usable; every other worker fault fails the runtime.
  bool usable_after() const {
    return (fault == Fault::throws || fault == Fault::oom) && (phase == Phase::call || phase == Phase::distribute);
  }
  // The text the error must contain (cause).
  std::string cause() const {
    switch (fault) {
      case Fault::kill: return "signal 9 (SIGKILL";
      case Fault::segv: return "signal 11 (SIGSEGV";
      case Fault::stop: return phase == Phase::collective ? "timed out after" : "did not finish within the timeout";
      case Fault::exit0: return "exited with code 0";
      case Fault::throws: return "injected fault";
      case Fault::oom: return "bad_alloc";
      default: return "";
    }
  }
  // The text naming the call.
  std::string call() const {
    switch (phase) {
      case Phase::idle:
      case Phase::call: return "function 'f' call #";
      case Phase::collective: return "all_reduce #";
      case Phase::distribute: return "distribute";
      default: return "";
    }
  }
  std::string expected() const {
    if (master()) return "master dies by the signal; its workers die with it (PDEATHSIG)";
    std::string e = "WorkerError rank 1, \"" + cause() + "\"";
    e += usable_after() ? "; runtime stays usable" : "; runtime failed, other worker killed, calls refused";
    return e;
  }
};

// Every case of the matrix, in table order.
inline std::vector<Case> matrix() {
  std::vector<Case> out;
  for (Fault f : {Fault::kill, Fault::segv, Fault::stop}) out.push_back({f, Phase::idle});
  for (Phase p : {Phase::call, Phase::collective, Phase::distribute})
    for (Fault f : {Fault::kill, Fault::segv, Fault::stop, Fault::exit0, Fault::throws, Fault::oom}) out.push_back({f, p});
  for (Fault f : {Fault::master_sigint, Fault::master_sigterm, Fault::master_sigkill}) out.push_back({f, Phase::busy});
  return out;
}

struct Settings {
  int timeout_ms = 1000;  // RuntimeOptions::timeout and collective_timeout
  // The GPU variants: "cuda" ranks, host-staged (ranks may share a GPU) or
  // NCCL (one GPU per rank).
  const char* device = "cpu";
  synk::CommBackend comm = synk::CommBackend::automatic;
};

struct Outcome {
  bool ok = false;          // every expectation held
  bool hang = false;        // the watchdog had to kill the harness
  int leaked_procs = 0;     // processes alive after their runtime/master was gone
  int leaked_segs = 0;      // memfd segments after close + new /dev/shm entries
  double seconds = -1;      // fault to exception (master cases: signal to last worker gone)
  std::string message;      // the exception's text
  std::string why;          // the first failed expectation
};

// ---- helpers ---------------------------------------------------------------------------

inline double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The /proc leak probe (tests/support/proc_probe.hpp, library
// synk_test_support): children zombies included, memfd segments, /dev/shm.
using synk_test::alive;
using synk_test::dev_shm_synk;
using synk_test::memfd_segments;

// Children of this process, zombies included (all threads), but for the
// runtime's fork server: with CUDA ranks it is kept for later forks (see
// runtime/fork_server.hpp) and dies with this process.
inline std::vector<int> children() { return synk_test::children(synk::detail::fork_server_pid()); }

// The record a harness sends to its parent.
struct Record {
  int32_t stage = 0;  // 1: ready (master cases), 2: done
  int32_t ok = 0;
  int32_t children_after_close = 0;
  int32_t memfds_after_close = 0;
  int32_t nworkers = 0;
  int32_t workers[4] = {};
  double seconds = -1;
  char message[1200] = {};
  char why[400] = {};
};
static_assert(sizeof(Record) < PIPE_BUF, "one atomic pipe write");

inline void copy_str(char* dst, size_t cap, const std::string& s) {
  const size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

// ---- the harness (the master of one case) ---------------------------------------------

struct Armed {
  std::atomic<int> armed;
  int fault;
  int phase;
};
inline Armed* g_armed = nullptr;  // a MAP_SHARED page: master and workers see one copy

[[noreturn]] inline void inject_now(Fault f, const char* where) {
  switch (f) {
    case Fault::kill: ::raise(SIGKILL); break;
    case Fault::segv: ::raise(SIGSEGV); break;
    case Fault::stop: ::raise(SIGSTOP); break;  // resumed only by the SIGKILL after the timeout
    case Fault::exit0: std::exit(0);
    case Fault::oom: {
      // Room for what the worker already has plus a little, then a large
      // allocation: the real bad_alloc path of a worker out of memory.
      std::ifstream status("/proc/self/status");
      std::string line;
      long vm_kb = 0;
      while (std::getline(status, line))
        if (line.rfind("VmSize:", 0) == 0) vm_kb = std::atol(line.c_str() + 7);
      rlimit rl{};
      rl.rlim_cur = rl.rlim_max = static_cast<rlim_t>(vm_kb) * 1024 + (64u << 20);
      ::setrlimit(RLIMIT_AS, &rl);
      std::vector<char> big(size_t{1} << 30, 1);
      throw std::runtime_error("allocation unexpectedly succeeded " + std::to_string(big[12345]));
    }
    default: break;
  }
  throw std::runtime_error(std::string("injected fault: exception ") + where);
}

inline bool take_arm(int phase) {
  if (!g_armed || g_armed->phase != phase) return false;
  int one = 1;
  return g_armed->armed.compare_exchange_strong(one, 0);
}

inline void hook_command(int cmd, int rank, synk::detail::CommandHeader&) {
  if (rank != 1) return;
  using synk::detail::Cmd;
  if (cmd == static_cast<int>(Cmd::call) && take_arm(static_cast<int>(Phase::call)))
    inject_now(static_cast<Fault>(g_armed->fault), "in a call");
  if (cmd == static_cast<int>(Cmd::collective) && take_arm(static_cast<int>(Phase::collective)))
    inject_now(static_cast<Fault>(g_armed->fault), "in a collective");
}

inline void hook_compile(int rank) {
  if (rank == 1 && take_arm(static_cast<int>(Phase::distribute)))
    inject_now(static_cast<Fault>(g_armed->fault), "while compiling");
}

inline int32_t nap_job(const int32_t& ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

// Runs in the harness process; returns its exit code (0: every check held).
inline int harness(const Case& c, const Settings& s, int fd) {
  using namespace synk;
  Record rec;
  auto send = [&](int stage) {
    rec.stage = stage;
    [[maybe_unused]] auto w = ::write(fd, &rec, sizeof rec);
  };
  std::string why;
  // A master started in the background inherits SIGINT ignored (shells do
  // that for `cmd &`); a user's master in the foreground has the defaults.
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  auto expect = [&](bool cond, const std::string& what) {
    if (!cond && why.empty()) why = what;
  };
  try {
    const RuntimeOptions o{.workers = 3, .device = s.device, .comm = s.comm, .seed = 1,
                           .spin = std::chrono::microseconds(5),
                           .timeout = std::chrono::milliseconds(s.timeout_ms),
                           .collective_timeout = std::chrono::milliseconds(s.timeout_ms),
                           .close_timeout = std::chrono::milliseconds(1000)};
    if (c.master()) {
      Runtime rt = synk::fork(o);
      for (int p : children()) rec.workers[rec.nworkers++] = p;
      send(1);
      std::vector<int32_t> jobs(600, 20);  // ~4 s over 3 ranks: the signal comes first
      rt.map(&nap_job, jobs);
      copy_str(rec.why, sizeof rec.why, "the master was not signalled");
      send(2);
      return 3;
    }
    void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) throw std::runtime_error("mmap of the arming page failed");
    g_armed = new (page) Armed{};
    g_armed->fault = static_cast<int>(c.fault);
    g_armed->phase = static_cast<int>(c.phase);
    detail::test_hooks().on_command = &hook_command;
    detail::test_hooks().before_compile = &hook_compile;

    Graph g;
    Tensor x = g.input("x", f32, {batch, 4});
    Tensor v = g.variable("v", {8}, Init::zeros());
    Runtime rt = synk::fork(o);
    ParallelFunction f = rt.function({"f", {x}, {{synk::sum(x), Collect::sum}}});
    rt.distribute();
    Data X = rt.data(Array::from(std::vector<float>(10 * 4, 0.5f), {10, 4}));
    expect(f({X})[0].scalar() == 20.f, "the first call gave a wrong sum");
    rt.set(v, Array::from(std::vector<float>(8, 1.f), {8}));
    const std::vector<int> kids = children();
    expect(kids.size() == 2, "not two workers");
    ParallelFunction f2;
    if (c.phase == Phase::distribute) f2 = rt.function({"f2", {x}, {{synk::max(x), Collect::max}}});

    g_armed->armed.store(1);
    auto t0 = std::chrono::steady_clock::now();
    bool raised = false;
    const double bound = s.timeout_ms / 1000.0 + 5.0;
    auto attempt = [&]() {
      switch (c.phase) {
        case Phase::idle: f({X}); break;
        case Phase::call: f({X}); break;
        case Phase::collective: rt.all_reduce({"v"}, ReduceOp::sum); break;
        case Phase::distribute: rt.distribute(); break;
        default: break;
      }
    };
    if (c.phase == Phase::idle) {
      g_armed->armed.store(0);
      const int sig = c.fault == Fault::kill ? SIGKILL : c.fault == Fault::segv ? SIGSEGV : SIGSTOP;
      ::kill(kids.size() > 0 ? kids[0] : 0, sig);  // the first child is rank 1
      t0 = std::chrono::steady_clock::now();
    }
    do {
      try {
        attempt();
      } catch (const WorkerError& e) {
        raised = true;
        rec.seconds = since(t0);
        copy_str(rec.message, sizeof rec.message, e.what());
        const std::string m = e.what();
        expect(e.rank() == 1, "rank " + std::to_string(e.rank()) + ", expected 1");
        expect(m.find(c.cause()) != std::string::npos, "the message lacks \"" + c.cause() + "\"");
        expect(m.find(c.call()) != std::string::npos, "the message lacks \"" + c.call() + "\"");
        expect(m.find("rank 1") != std::string::npos, "the message lacks \"rank 1\"");
      } catch (const std::exception& e) {
        raised = true;
        rec.seconds = since(t0);
        copy_str(rec.message, sizeof rec.message, e.what());
        expect(false, std::string("not a WorkerError: ") + e.what());
      }
      // Idle: a call racing the watcher may still succeed; try again.
    } while (!raised && c.phase == Phase::idle && since(t0) < bound);
    expect(raised, "no exception");
    expect(rec.seconds <= bound, "took " + std::to_string(rec.seconds) + " s");

    // What the runtime does next.
    if (c.usable_after()) {
      try {
        expect(f({X})[0].scalar() == 20.f, "the next call gave a wrong sum");
        if (c.phase == Phase::distribute) {
          // The failed distribute dropped f2 (made since the last good
          // one): its handle is refused, a new one works.
          bool dropped = false;
          try {
            f2({X});
          } catch (const ArgumentError&) {
            dropped = true;
          }
          expect(dropped, "a function dropped by the failed distribute ran");
          f2 = rt.function({"f2", {x}, {{synk::max(x), Collect::max}}});
          rt.distribute();  // again, now without the fault
          expect(f2({X})[0].scalar() == 0.5f, "the function made and distributed again gave a wrong max");
        }
      } catch (const std::exception& e) {
        expect(false, std::string("the next call failed: ") + e.what());
      }
    } else {
      try {
        f({X});
        expect(false, "a call after the failure succeeded");
      } catch (const WorkerError& e) {
        expect(std::string(e.what()).find("refused") != std::string::npos, "the refusal does not say so");
      }
      for (int k : kids)
        if (k != kids[0]) {
          // The other worker was killed by the runtime (reaped by the watcher).
          for (int i = 0; i < 500 && alive(k); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
          expect(!alive(k), "the other worker is still alive");
        }
    }
    rt.close();
    X = Data();
#if SYNK_HAVE_NCCL
    // Worker communicators (and CUDA contexts) end with their processes,
    // checked below; the master's must end with close().
    expect(comm::NcclComm::live() == 0, "an NCCL communicator of the master outlived close()");
#endif
  } catch (const std::exception& e) {
    expect(false, std::string("harness: ") + e.what());
  }
  rec.children_after_close = static_cast<int32_t>(children().size());
  rec.memfds_after_close = memfd_segments("self");
  expect(rec.children_after_close == 0, "child processes after close");
  expect(rec.memfds_after_close == 0, "memfd segments after close");
  rec.ok = why.empty();
  copy_str(rec.why, sizeof rec.why, why);
  send(2);
  return rec.ok ? 0 : 1;
}

// ---- the parent side ---------------------------------------------------------------------

// Reads one record, waiting until `deadline_s` from now; false on timeout/EOF.
inline bool read_record(int fd, Record& r, double deadline_s) {
  auto t0 = std::chrono::steady_clock::now();
  size_t got = 0;
  auto* p = reinterpret_cast<char*>(&r);
  while (got < sizeof r) {
    const int left_ms = static_cast<int>((deadline_s - since(t0)) * 1000);
    if (left_ms <= 0) return false;
    pollfd pf{fd, POLLIN, 0};
    if (::poll(&pf, 1, left_ms) <= 0) continue;
    const ssize_t k = ::read(fd, p + got, sizeof r - got);
    if (k <= 0) return false;
    got += static_cast<size_t>(k);
  }
  return true;
}

// Reaps orphans reparented to us (we are a child subreaper); returns how many
// of them were still alive `grace_s` after their master was gone.
inline int reap_orphans(double grace_s) {
  auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    const std::vector<int> kids = children();
    if (kids.empty()) return 0;
    if (since(t0) > grace_s) {
      for (int k : kids) ::kill(k, SIGKILL);
      for (int k : kids) ::waitpid(k, nullptr, 0);
      return static_cast<int>(kids.size());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Runs one case in a fresh harness process. Call it from a process with no
// other children (orphans of the case are reaped here).
inline Outcome run_case(const Case& c, const Settings& s) {
  Outcome out;
  const std::set<std::string> shm_before = dev_shm_synk();
  const int was_subreaper = [] {
    int v = 0;
    ::prctl(PR_GET_CHILD_SUBREAPER, &v);
    return v;
  }();
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    out.why = "pipe failed";
    return out;
  }
  std::fflush(nullptr);
  const pid_t h = ::fork();
  if (h == 0) {
    ::close(fds[0]);
    ::_exit(harness(c, s, fds[1]));
  }
  ::close(fds[1]);
  const double watchdog = s.timeout_ms / 1000.0 + 15.0;
  Record rec;
  std::string why;
  if (c.master()) {
    if (!read_record(fds[0], rec, watchdog) || rec.stage != 1) {
      out.hang = true;
      why = "the harness never became ready";
      ::kill(h, SIGKILL);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the workers are inside the map
      const int sig = c.fault == Fault::master_sigint ? SIGINT : c.fault == Fault::master_sigterm ? SIGTERM : SIGKILL;
      const auto t0 = std::chrono::steady_clock::now();
      ::kill(h, sig);
      int st = 0;
      ::waitpid(h, &st, 0);
      if (!(WIFSIGNALED(st) && WTERMSIG(st) == sig)) why = "the master did not die by the signal";
      // Its workers die with it (PDEATHSIG) and come back to us to be reaped.
      bool all_gone = false;
      while (!all_gone && since(t0) < s.timeout_ms / 1000.0 + 5.0) {
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {
        }
        all_gone = true;
        for (int i = 0; i < rec.nworkers; ++i) all_gone = all_gone && !alive(rec.workers[i]);
        if (!all_gone) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      out.seconds = since(t0);
      if (!all_gone) why = why.empty() ? "a worker outlived its master" : why;
      for (int i = 0; i < rec.nworkers; ++i) out.leaked_segs += memfd_segments(std::to_string(rec.workers[i]));
    }
  } else {
    if (!read_record(fds[0], rec, watchdog) || rec.stage != 2) {
      out.hang = true;
      why = "watchdog: no result within " + std::to_string(watchdog) + " s";
      ::kill(h, SIGKILL);
    }
    int st = 0;
    ::waitpid(h, &st, 0);
    if (!out.hang) {
      out.seconds = rec.seconds;
      out.message = rec.message;
      if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        why = rec.why[0] ? rec.why : "the harness ended with status " + std::to_string(st);
      out.leaked_procs += rec.children_after_close;
      out.leaked_segs += rec.memfds_after_close;
    }
  }
  ::close(fds[0]);
  out.leaked_procs += reap_orphans(2.0);
  for (const std::string& e : dev_shm_synk())
    if (!shm_before.count(e)) ++out.leaked_segs;
  if (!was_subreaper) ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  if (why.empty() && out.leaked_procs) why = "leaked processes";
  if (why.empty() && out.leaked_segs) why = "leaked segments";
  out.why = why;
  out.ok = why.empty() && !out.hang;
  return out;
}

}  // namespace synk_faults
