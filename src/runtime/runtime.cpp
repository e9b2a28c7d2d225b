// src/runtime/runtime.cpp — the master side of synk::Runtime: fork, the
// control plane (signal a command, wait for the workers), worker-death
// detection, segment publishing, distribute() and close().
//
// Death detection: a watcher thread in the master polls one pidfd per worker
// (plus an eventfd to stop it) and is the only place that reaps workers. An
// unexpected exit marks the runtime failed (message naming rank and
// signal/exit code), aborts the CpuGroup (so a master blocked in a collective
// returns at once), wakes the master's waits and kills the other workers.
// The master's waits sleep on futexes in slices of kPollNs, so a death is
// noticed within that even if a wake-up is lost.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "comm/futex.hpp"
#include "comm/make_comm.hpp"
#include "cuda/context.hpp"
#include "runtime/core.hpp"
#include "runtime/fork_server.hpp"
#include "synk/config.hpp"
#include "synk/serialize.hpp"

namespace synk {
namespace detail {

const char* cmd_name(Cmd c) {
  switch (c) {
    case Cmd::none: return "none";
    case Cmd::stop: return "stop";
    case Cmd::sync: return "sync";
    case Cmd::distribute: return "distribute";
    case Cmd::call: return "call";
    case Cmd::collective: return "collective";
    case Cmd::var_get: return "get";
    case Cmd::var_set: return "set";
    case Cmd::comm_init: return "comm_init";
    case Cmd::jobs: return "jobs";
  }
  return "?";
}

namespace {

constexpr int64_t kPollNs = 50'000'000;  // the master's futex sleep slice

std::atomic<bool> g_open{false};  // one open runtime per process

// Cores whose Runtime was destroyed inside one of their own calls
// (Busy::finish_deferred_close), kept until the next fork().
std::vector<std::shared_ptr<RuntimeCore>>& deferred_cores() {
  static std::vector<std::shared_ptr<RuntimeCore>> cores;
  return cores;
}

template <class T> std::atomic_ref<T> at(T& x) { return std::atomic_ref<T>(x); }

std::string errno_text(const char* call) { return std::string(call) + ": " + std::strerror(errno); }

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::vector<int> usable_cpus() {
  std::vector<int> out;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) out.push_back(c);
  if (out.empty()) out.push_back(0);
  return out;
}

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::sched_setaffinity(0, sizeof set, &set);  // best effort: a failure only costs speed
}

std::string describe_exit(const siginfo_t& si) {
  if (si.si_code == CLD_EXITED) return "exited with code " + std::to_string(si.si_status);
  const char* abbrev = ::sigabbrev_np(si.si_status);
  const char* text = ::strsignal(si.si_status);
  return "was killed by signal " + std::to_string(si.si_status) + " (" + (abbrev ? "SIG" + std::string(abbrev) : "?") +
         ": " + (text ? text : "?") + (si.si_code == CLD_DUMPED ? ", core dumped" : "") + ")";
}

}  // namespace

// "R (running)", "T (stopped)", ... of a live process, for timeout messages:
// a stopped worker (SIGSTOP, a debugger) reads differently from a busy one.
std::string process_state(pid_t pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return "gone";
  char buf[512];
  const size_t k = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[k] = '\0';
  const char* close_paren = std::strrchr(buf, ')');
  if (!close_paren || close_paren[1] != ' ') return "?";
  switch (close_paren[2]) {
    case 'R': return "running";
    case 'S': return "sleeping";
    case 'D': return "in uninterruptible sleep";
    case 'T': return "stopped";
    case 't': return "stopped by a tracer";
    case 'Z': return "a zombie";
    default: return std::string(1, close_paren[2]);
  }
}


// ---- lifecycle ---------------------------------------------------------------------

namespace {
std::atomic<pid_t> g_pid{0};
void renew_pid() noexcept { g_pid.store(::getpid(), std::memory_order_relaxed); }
}  // namespace

pid_t self_pid() noexcept {
  static const bool once = [] {
    ::pthread_atfork(nullptr, nullptr, &renew_pid);
    renew_pid();
    return true;
  }();
  (void)once;
  return g_pid.load(std::memory_order_relaxed);
}

const void* thread_mark() noexcept {
  thread_local const char mark = 0;
  return &mark;
}

uint64_t next_unique_id() noexcept {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

TestHooks& test_hooks() {
  static TestHooks hooks;
  return hooks;
}

RuntimeCore::~RuntimeCore() { close(); }

void RuntimeCore::check_usable(const std::string& what) {
  // A worker holds a forked copy of the master's runtime object; using it
  // would publish commands from the wrong process.
  if (open && self_pid() != master_pid)
    throw ArgumentError("Runtime::" + what + ": called in a worker process (pid " + std::to_string(::getpid()) +
                        "); only the master (pid " + std::to_string(master_pid) + ") may use the runtime");
  if (!open) throw ArgumentError("Runtime::" + what + ": the runtime is closed");
  if (failed.load()) {
    // Async jobs with retries left: the call heals the runtime for them.
    if (heal_for_jobs(*this, what)) return;
    std::lock_guard<std::mutex> lk(fail_mu);
    // Across nodes heal() needs every node (docs/multinode.md, Failures).
    throw WorkerError("synk runtime: " + what + " refused: the runtime failed earlier (" + fail_msg +
                          (multi() ? "); heal() it on every node, or save a checkpoint (save_checkpoint works on the "
                                     "failed runtime), close() it, end the job and start it again from the checkpoint"
                                   : "); heal() it, or close() it and fork() again (see Runtime::heal, Runtime::snapshot)"),
                      fail_rank);
  }
}

void RuntimeCore::throw_failure(const std::string& what) {
  std::lock_guard<std::mutex> lk(fail_mu);
  throw WorkerError("synk runtime: " + what + " failed: " + fail_msg, fail_rank);
}

void RuntimeCore::fail_collective(const std::string& what, const std::string& err) {
  if (!failed.load()) {
    // The group says whom its abort blames: the rank that aborted it (a
    // worker's exception) or the peer a timed-out wait was for.
    int blame = 0;
    std::string reason = err;
    if (group && group->aborted()) {
      blame = group->blamed_rank();
      reason = group->abort_reason();
      // A worker that threw in the collective reports through its slot
      // too; prefer its message (it names the original exception).
      if (blame > 0 && blame < n) {
        WorkerSlot& s = cb->slots[blame];
        const int64_t until = comm::monotonic_ns() + 200'000'000;
        while (at(s.done).load() != seq && comm::monotonic_ns() < until && !failed.load()) ::usleep(100);
        if (at(s.done).load() == seq && s.status != 0)
          reason = "worker rank " + std::to_string(blame) + ": " + std::string(s.msg, strnlen(s.msg, sizeof s.msg));
      }
    }
    // A stopped peer (SIGSTOP, a debugger) is why the others' waits ran
    // out, whichever wait gave up first: an NCCL wait cannot tell which
    // peer it waits for, so its rank blames itself.
    for (int r = 1; r < n; ++r) {
      if (r == blame || pids[static_cast<size_t>(r)] <= 0) continue;
      const std::string state = process_state(pids[static_cast<size_t>(r)]);
      if (state.rfind("stopped", 0) != 0) continue;
      reason = "worker rank " + std::to_string(r) + " (pid " + std::to_string(pids[static_cast<size_t>(r)]) +
               ") is " + state + ", so its peers' waits ran out: " + reason;
      blame = r;
      break;
    }
    if (blame <= 0 || blame >= n) blame = 0;
    fail(blame == 0 ? "rank 0 (master): " + reason : reason, blame);
  }
  throw_failure(what);
}

Busy::Busy(RuntimeCore& c, const std::string& what, bool keep_jobs) : c_(c) {
  if (!c.try_claim())
    throw ArgumentError("Runtime::" + what +
                        ": another runtime call is running (from another thread, or re-entrant from a map job); "
                        "a runtime is used by one thread at a time");
  // Queued async jobs hold the workers: every other call finishes them first.
  if (!keep_jobs && c.stream) {
    try {
      finish_jobs(c);
    } catch (...) {
      c.unclaim();
      throw;
    }
  }
}

void Busy::finish_deferred_close() noexcept {
  c_.close_pending.store(false);
  c_.close();
  // The Runtime that owned this core is gone; the frames of the call that
  // is ending still use the core, so it lives on (closed, holding nothing
  // of the runtime's) until the next fork().
  deferred_cores().push_back(std::move(c_.keep_alive));
}

void RuntimeCore::close_from_api(const std::shared_ptr<RuntimeCore>& self, bool may_throw) {
  auto report = [&] {
    if (close_error.empty()) return;
    std::string e = std::move(close_error);
    close_error.clear();
    if (may_throw) throw IoError("Runtime::close: " + e);
    std::fprintf(stderr, "synk: %s\n", e.c_str());
  };
  if (!open) return report();
  // A worker holds a forked copy of the master's runtime: closing it there
  // would stop every worker.
  if (self_pid() != master_pid) {
    if (may_throw)
      throw ArgumentError("Runtime::close: called in a worker process (pid " + std::to_string(::getpid()) +
                          "); only the master (pid " + std::to_string(master_pid) + ") may close the runtime");
    return;
  }
  // Claim the runtime as a call does, so that close() never frees what a
  // running call uses: a call of another thread is waited for (calls made
  // meanwhile are refused as concurrent ones always are).
  if (!claim()) {
    if (may_throw)
      throw ArgumentError(
          "Runtime::close: called inside a runtime call of the same thread (e.g. from a map job the master "
          "runs); close() the runtime after the call has returned");
    keep_alive = self;
    close_pending.store(true);
    return;
  }
  close();
  unclaim();
  report();
}

bool RuntimeCore::try_claim() noexcept {
  bool expected = false;
  if (!busy.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
  busy_owner.store(thread_mark(), std::memory_order_relaxed);
  return true;
}

bool RuntimeCore::claim() noexcept {
  while (!try_claim()) {
    if (busy_owner.load(std::memory_order_relaxed) == thread_mark()) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

void RuntimeCore::fail(const std::string& msg, int rank) noexcept {
  {
    std::lock_guard<std::mutex> lk(fail_mu);
    if (failed.load()) return;
    fail_msg = msg;
    fail_rank = rank;
    if (multi()) {
      // Name the node and the global rank: the message may end up on
      // another node's screen (notify_nodes) or in the launcher's output.
      if (msg.rfind("node ", 0) != 0)
        fail_msg = "node " + std::to_string(node) + " (" + link->host() + ")" +
                   (rank > 0 ? ", global rank " + std::to_string(base + rank) : "") + ": " + msg;
      if (rank > 0) fail_rank = base + rank;
      comm::note_mpi_failure();
    }
    stopping.store(true);
    failed.store(true);
  }
  if (group) group->abort(msg, rank);
  for (size_t r = 1; r < pids.size(); ++r) {
    if (pidfds[r] >= 0) ::syscall(SYS_pidfd_send_signal, pidfds[r], SIGKILL, nullptr, 0);
    comm::futex_wake(&cb->slots[r].done);
  }
}

void RuntimeCore::watch() {
  std::vector<pollfd> fds(static_cast<size_t>(n));
  fds[0] = {stop_efd, POLLIN, 0};
  for (int r = 1; r < n; ++r) fds[static_cast<size_t>(r)] = {pidfds[static_cast<size_t>(r)], POLLIN, 0};
  int live = n - 1;
  while (live > 0) {
    int rc = ::poll(fds.data(), fds.size(), -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) break;
    for (int r = 1; r < n; ++r) {
      pollfd& p = fds[static_cast<size_t>(r)];
      if (p.fd < 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      siginfo_t si{};
      if (::waitid(P_PIDFD, static_cast<id_t>(p.fd), &si, WEXITED) != 0 && errno != ECHILD) continue;
      p.fd = -1;
      --live;
      reaped.fetch_add(1);
      if (!stopping.load())
        fail("worker rank " + std::to_string(r) + " (pid " + std::to_string(pids[static_cast<size_t>(r)]) + ") " +
                 describe_exit(si) + "; the other workers were stopped",
             r);
    }
  }
}

void RuntimeCore::close() noexcept {
  if (!open || self_pid() != master_pid) return;
  stop_stall_watcher();
  if (cb && trace::g_activity == &cb->slots[0].doing) trace::g_activity = nullptr;
  if (steps && trace::g_steps == steps->rank(0)) trace::detach_steps();
  cancel_jobs(*this);  // queued async jobs that no rank took never run
  open = false;
  // The timeline is written below, once every worker has stopped writing it.
  if (trace) trace::detach();
  if (n > 1 && cb) {
    stopping.store(true);
    if (!failed.load()) {
      at(cb->cmd.kind).store(static_cast<uint32_t>(Cmd::stop));
      at(cb->seq).store(++seq, std::memory_order_seq_cst);
      comm::futex_wake(&cb->seq);
    }
    const int64_t deadline = comm::monotonic_ns() + opts.close_timeout.count() * 1'000'000;
    while (reaped.load() < n - 1 && comm::monotonic_ns() < deadline) ::usleep(200);
    if (reaped.load() < n - 1) {
      for (size_t r = 1; r < pidfds.size(); ++r)
        if (pidfds[r] >= 0) ::syscall(SYS_pidfd_send_signal, pidfds[r], SIGKILL, nullptr, 0);
      const int64_t d2 = comm::monotonic_ns() + 5'000'000'000;
      while (reaped.load() < n - 1 && comm::monotonic_ns() < d2) ::usleep(200);
    }
    if (stop_efd >= 0) {
      uint64_t one = 1;
      [[maybe_unused]] auto w = ::write(stop_efd, &one, sizeof one);
    }
    if (watcher.joinable()) watcher.join();
    if (stop_efd >= 0) ::close(stop_efd);
    stop_efd = -1;
    for (int& fd : pidfds)
      if (fd >= 0) { ::close(fd); fd = -1; }
    for (int& fd : socks)
      if (fd >= 0) { ::close(fd); fd = -1; }
  }
  if (trace) {
    // A runtime closes from destructors too: a trace that cannot be written
    // is reported, never thrown.
    try {
      std::vector<std::string> names;
      for (const FunctionDef& d : defs) names.push_back(d.name);
      trace->write(trace_path, names, base,
                   multi() ? "node " + std::to_string(node) + " of " + std::to_string(nodes) : std::string(),
                   stall_events);
    } catch (const std::exception& e) {
      close_error = e.what();
    }
    trace.reset();
  }
  steps.reset();
  // Aborting frees a communicator without talking to peers, which are gone
  // or stopping (a finalize could wait for them).
  if (rank) rank->close("the runtime was closed");
  rank.reset();
  results.clear();
  grads_segs.clear();
  grads_ids.clear();
  arenas.clear();
  arena_ids.clear();
  clear_rank_locals();
  args.reset();
  seg_ptr.clear();
  seg_sent.clear();
  group.reset();
  ctl_seg.reset();
  cb = nullptr;
  if (affinity_saved) {
    ::sched_setaffinity(0, old_affinity.size(), reinterpret_cast<cpu_set_t*>(old_affinity.data()));
    affinity_saved = false;
    note_unpinned_cpus(0);
  }
  release_fork_server();
  g_open.store(false);
}

// ---- segments ------------------------------------------------------------------------

namespace {

// Sends one segment message and counts it in the worker's slot (`sent`).
bool send_msg(int sock, const SegMsg& m, int fd, uint32_t& sent) {
  iovec iov{const_cast<SegMsg*>(&m), sizeof m};
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    std::memset(ctl, 0, sizeof ctl);
    h.msg_control = ctl;
    h.msg_controllen = sizeof ctl;
    cmsghdr* c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    if (::sendmsg(sock, &h, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof m)) {
      at(sent).fetch_add(1, std::memory_order_release);
      return true;
    }
    if (errno == EINTR) continue;
    return false;
  }
}

}  // namespace

uint64_t RuntimeCore::publish(const comm::SharedSegment& seg, int rank) {
  const uint64_t id = next_unique_id();
  seg_ptr[id] = {static_cast<const uint8_t*>(seg.data()), seg.size()};
  seg_sent[id] = {seg.fd(), rank, seg.size()};
  SegMsg m{id, seg.size(), 1, 0};
  for (int r = 1; r < n; ++r) {
    if (rank >= 0 && r != rank) continue;
    // The socket buffer holds hundreds of messages; when it is full (many
    // segments made with no call in between), a sync command lets the
    // workers drain it.
    for (int tries = 0; !send_msg(socks[static_cast<size_t>(r)], m, seg.fd(), cb->slots[r].seg_msgs); ++tries) {
      if (errno != EAGAIN || tries > 1000) {
        fail("cannot send a shared segment to worker rank " + std::to_string(r) + ": " + errno_text("sendmsg"), r);
        throw_failure("sharing a segment");
      }
      signal(Cmd::sync, false);
      wait_workers("sync");
    }
  }
  return id;
}

void RuntimeCore::release(uint64_t id, int rank) noexcept {
  if (this->rank) this->rank->unpin(id);  // before the caller unmaps it
  seg_ptr.erase(id);
  seg_sent.erase(id);
  if (!open || failed.load()) return;
  SegMsg m{id, 0, 2, 0};
  for (int r = 1; r < n; ++r) {
    if (rank >= 0 && r != rank) continue;
    // Best effort: a lost release only keeps a mapping until close.
    send_msg(socks[static_cast<size_t>(r)], m, -1, cb->slots[r].seg_msgs);
  }
}

void RuntimeCore::ensure_args(size_t bytes) {
  if (args && args.size() >= bytes) return;
  size_t cap = std::max<size_t>(bytes, std::max<size_t>(1 << 20, args.size() * 2));
  comm::SharedSegment seg = comm::SharedSegment::create(cap, "synk-args");
  const uint64_t id = publish(seg, -1);
  if (args_id) release(args_id, -1);
  args = std::move(seg);
  args_id = id;
}

void RuntimeCore::ensure_shared_grads(size_t elems) {
  const size_t bytes = std::max<size_t>(elems, 1) * sizeof(float);
  if (!grads_segs.empty() && grads_segs[0].size() >= bytes) return;
  // One buffer per rank, every one mapped by every rank. New ones replace
  // the old (released once the workers map the new, at the next command).
  std::vector<comm::SharedSegment> segs;
  std::vector<uint64_t> ids;
  for (int r = 0; r < n; ++r) {
    segs.push_back(comm::SharedSegment::create(bytes, "synk-grads"));
    ids.push_back(publish(segs.back(), -1));
  }
  for (uint64_t id : grads_ids) release(id, -1);
  for (int r = 0; r < n; ++r) cb->grads_seg[r] = ids[static_cast<size_t>(r)];
  cb->grads_bytes = bytes;
  ++cb->grads_gen;
  std::vector<void*> bufs(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) bufs[static_cast<size_t>(r)] = segs[static_cast<size_t>(r)].data();
  rank->map_peer_grads(std::move(bufs), bytes, cb->grads_gen);
  grads_segs = std::move(segs);
  grads_ids = std::move(ids);
}

void RuntimeCore::ensure_result(int rank, size_t bytes) {
  auto& seg = results[static_cast<size_t>(rank)];
  if (seg && seg.size() >= bytes) return;
  size_t cap = std::max<size_t>(bytes, std::max<size_t>(64 << 10, seg.size() * 2));
  comm::SharedSegment s = comm::SharedSegment::create(cap, "synk-result");
  const uint64_t id = publish(s, rank);
  if (result_ids[static_cast<size_t>(rank)]) release(result_ids[static_cast<size_t>(rank)], rank);
  seg = std::move(s);
  result_ids[static_cast<size_t>(rank)] = id;
  cb->cmd.result_id[rank] = id;
  cb->cmd.result_cap[rank] = cap;
}

void RuntimeCore::set_args(const std::vector<uint8_t>& bytes) {
  ensure_args(bytes.size());
  if (!bytes.empty()) std::memcpy(args.data(), bytes.data(), bytes.size());
  cb->cmd.args_id = args_id;
  cb->cmd.args_bytes = bytes.size();
}

// ---- heal ---------------------------------------------------------------------------------

// Why every worker is replaced, not only the dead one: the runtime's
// failure has already stopped the others (fail(): a death mid-collective
// leaves the group and an NCCL communicator unusable for everyone, and a
// survivor could be anywhere in the command), so the one state known to be
// whole is the master's (rank 0): its variables are updated only after a
// training step's all-reduce completed. A replacement is forked from the
// fork server like the first workers and given what the master holds: the
// segments (under their old ids, so Data, results and gradient buffers
// keep working), the functions of the last distribute() (so every
// ParallelFunction keeps its index), a new communicator where one is
// joined through bootstrap bytes (NCCL), and every variable's value.
void RuntimeCore::heal(const char* what) {
  if (!failed.load()) return;
  // The stall watcher reads the slots and pids replaced below: it waits
  // (and starts again once the ranks are back).
  stop_stall_watcher();
  std::string cause;
  int cause_rank = -1;
  {
    std::lock_guard<std::mutex> lk(fail_mu);
    cause = fail_msg;
    cause_rank = fail_rank;
  }
  // Async jobs still queued when the runtime failed end with its failure.
  fail_jobs(*this, "synk runtime: the jobs failed: " + cause, cause_rank);
  // Every worker gone and reaped (fail() killed them; a worker that had not
  // died yet is killed again), so the watcher has ended.
  for (size_t r = 1; r < pidfds.size(); ++r)
    if (pidfds[r] >= 0) ::syscall(SYS_pidfd_send_signal, pidfds[r], SIGKILL, nullptr, 0);
  const int64_t deadline = comm::monotonic_ns() + 5'000'000'000;
  while (reaped.load() < n - 1 && comm::monotonic_ns() < deadline) ::usleep(200);
  if (reaped.load() < n - 1)
    throw BackendError("Runtime::" + std::string(what) + ": a stopped worker could not be reaped within 5 s");
  if (watcher.joinable()) watcher.join();
  for (int& fd : pidfds)
    if (fd >= 0) { ::close(fd); fd = -1; }
  for (int& fd : socks)
    if (fd >= 0) { ::close(fd); fd = -1; }
  for (size_t r = 1; r < pids.size(); ++r) pids[r] = 0;
  // Several nodes: the link first, while the runtime is still failed with
  // no worker, so that none starts unless every node heals, and a node
  // that does not leaves this one failed as before (close() works).
  if (multi()) {
    try {
      renew_link(what);
    } catch (const std::exception& e) {
      {
        std::lock_guard<std::mutex> lk(fail_mu);
        fail_msg = "healing failed: " + std::string(e.what()) + " (the runtime failed with: " + fail_msg + ")";
      }
      throw_failure(what);
    }
  }

  // The control words as a new runtime has them; the rest of the control
  // block (node layout, gradient buffers' ids, the timeline's segment, the
  // result segments' ids) stays valid for the replacements.
  seq = 0;
  at(cb->seq).store(0);
  at(cb->sleepers).store(0);
  cb->cmd.kind = static_cast<uint32_t>(Cmd::none);
  at(cb->map_next).store(0);
  std::memset(static_cast<void*>(&cb->jobs), 0, sizeof cb->jobs);
  for (int r = 0; r < n; ++r) {
    WorkerSlot& s = cb->slots[r];
    at(s.done).store(0);
    at(s.master_waits).store(0);
    s.status = 0;
    at(s.seg_msgs).store(0);
    at(s.job).store(0);
    s.msg[0] = '\0';
    if (r > 0) std::memset(static_cast<void*>(&s.doing), 0, sizeof s.doing);  // the dead worker's open spans
  }
  group->reset();
  {
    std::lock_guard<std::mutex> lk(fail_mu);
    fail_msg.clear();
    fail_rank = -1;
    reaped.store(0);
    stopping.store(false);
    failed.store(false);
  }

  const bool cuda = device == Device::cuda;
  try {
    // The server first (for CPU ranks a fresh fork of this process), then
    // the sockets, so the server holds none of them.
    // Several nodes: the server kept from before MPI was initialised.
    ForkServer* kept = multi() ? kept_fork_server() : nullptr;
    ForkServer& server = kept ? *kept : fork_server_for(cuda, cuda ? "cuda" : "cpu");
    {
      SubreaperScope reaper;
      for (int r = 1; r < n; ++r) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
          throw BackendError(errno_text("socketpair"));
        socks[static_cast<size_t>(r)] = sv[0];
        ::fcntl(sv[0], F_SETFL, ::fcntl(sv[0], F_GETFL) | O_NONBLOCK);
        start_worker(server, r, sv[1]);
      }
    }
    release_fork_server(cuda || multi());
    // A node of one rank (several nodes) has no worker to watch, as in fork().
    if (n > 1) watcher = std::thread([this] { watch(); });

    // The segments the workers held, under the same ids.
    for (const auto& [id, sent] : seg_sent) {
      const SegMsg m{id, sent.size, 1, 0};
      for (int r = 1; r < n; ++r) {
        if (sent.rank >= 0 && r != sent.rank) continue;
        for (int tries = 0; !send_msg(socks[static_cast<size_t>(r)], m, sent.fd, cb->slots[r].seg_msgs); ++tries) {
          if (errno != EAGAIN || tries > 1000) throw BackendError(errno_text("sendmsg"));
          signal(Cmd::sync, false);
          wait_workers(what);
        }
      }
    }
    if (graph && distributed_defs > 0) {
      const std::vector<FunctionDef> done(defs.begin(), defs.begin() + static_cast<std::ptrdiff_t>(distributed_defs));
      set_args(serialize(*graph, done));
      signal(Cmd::distribute, false);
      wait_workers(what);
      if (comm::needs_bootstrap(comm_kind)) {
        rank->drop_joined_comm("the runtime heals: a new communicator replaces this one");
        join_comms();
      }
      heal_variables(what);
    }
    if (opts.stall_after_s > 0 && (n > 1 || multi())) start_stall_watcher();
  } catch (const WorkerError&) {
    throw;
  } catch (const std::exception& e) {
    fail(std::string("healing failed: ") + e.what(), -1);
    throw_failure(what);
  }
}

// Every rank gets the master's variables (optimizer state included). With
// several nodes the masters' copies may differ (a failure between one
// node's update and another's), so node 0's master is the one source: it
// sends every variable, packed in one message, to the other masters, which
// take them as their own before giving them to their workers.
void RuntimeCore::heal_variables(const char* what) {
  std::vector<std::pair<int32_t, size_t>> vars;  // (node id, bytes)
  size_t total = 0;
  for (size_t id = 0; id < distributed_nodes; ++id) {
    const Node& node = graph->node(static_cast<int32_t>(id));
    if (node.op != Op::Variable) continue;
    const size_t nb = static_cast<size_t>(numel(node.shape)) * dtype_size(node.dtype);
    if (nb == 0) continue;
    vars.emplace_back(static_cast<int32_t>(id), nb);
    total += nb;
  }
  std::vector<uint8_t> values(total);
  size_t off = 0;
  if (node == 0)
    for (const auto& [id, nb] : vars) {
      rank->read_variable(id, values.data() + off, nb);
      off += nb;
    }
  if (multi()) {
    link->broadcast(values.data(), values.size(), 0, "the variables of node 0's master");
    off = 0;
    if (node != 0)
      for (const auto& [id, nb] : vars) {
        rank->write_variable(id, values.data() + off, nb);
        off += nb;
      }
  }
  off = 0;
  for (const auto& [id, nb] : vars) {
    set_args(encode_var_set(-1, id, values.data() + off, nb));
    off += nb;
    signal(Cmd::var_set, false);
    wait_workers(what);
  }
}

// The link between the masters back to a known state (NodeLink::renew):
// every node calls heal(), so every node renews it, and one that does not
// makes the others' renewal time out with an error saying so.
void RuntimeCore::renew_link(const char* what) {
  try {
    link->renew(what);
  } catch (const std::exception& e) {
    throw BackendError(std::string(e.what()) + "; healing across nodes needs every node to catch the failure and call "
                       "heal() (a node that ended, closed its runtime or made another call never renews the link): "
                       "end the job and start it again from a checkpoint");
  }
}

// ---- control plane ------------------------------------------------------------------------

void RuntimeCore::signal(Cmd c, bool collective) {
  cb->cmd.kind = static_cast<uint32_t>(c);
  cb->cmd.collective = collective ? 1 : 0;
  cb->cmd.call_no = calls;
  at(cb->seq).store(++seq, std::memory_order_seq_cst);
  if (at(cb->sleepers).load(std::memory_order_seq_cst) != 0) comm::futex_wake(&cb->seq);
}

void RuntimeCore::wait_workers(const Label& what) {
  const int64_t start = comm::monotonic_ns();
  const int64_t deadline = start + opts.timeout.count() * 1'000'000;
  for (int r = 1; r < n; ++r) {
    WorkerSlot& s = cb->slots[r];
    auto done = at(s.done);
    if (done.load(std::memory_order_acquire) == seq) continue;
    bool ok = false;
    for (uint32_t i = 1;; ++i) {
      comm::cpu_relax();
      if (done.load(std::memory_order_acquire) == seq) { ok = true; break; }
      if ((i & 255) == 0) {
        if (failed.load()) throw_failure(what.str());
        if (comm::monotonic_ns() - start >= spin_ns) break;
      }
    }
    while (!ok) {
      if (failed.load()) throw_failure(what.str());
      at(s.master_waits).fetch_add(1, std::memory_order_seq_cst);
      uint32_t v = done.load(std::memory_order_seq_cst);
      if (v == seq) {
        at(s.master_waits).fetch_sub(1);
        break;
      }
      const int64_t now = comm::monotonic_ns();
      if (now >= deadline) {
        at(s.master_waits).fetch_sub(1);
        fail("worker rank " + std::to_string(r) + " (pid " + std::to_string(pids[static_cast<size_t>(r)]) +
                 ", " + process_state(pids[static_cast<size_t>(r)]) + ") did not finish within the timeout of " +
                 std::to_string(opts.timeout.count()) + " ms; the workers were stopped",
             r);
        throw_failure(what.str());
      }
      comm::futex_wait(&s.done, v, std::min<int64_t>(kPollNs, deadline - now));
      at(s.master_waits).fetch_sub(1);
    }
  }
  // Workers' exceptions: all of them, in rank order.
  std::string msg;
  int first = -1;
  for (int r = 1; r < n; ++r) {
    const WorkerSlot& s = cb->slots[r];
    if (s.status == 0) continue;
    if (first < 0) first = r;
    msg += (msg.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + ": " +
           std::string(s.msg, strnlen(s.msg, sizeof s.msg));
  }
  if (first >= 0) throw WorkerError("synk runtime: " + what.str() + " failed on a worker: " + msg, first);
}

// ---- graph and functions --------------------------------------------------------------

void RuntimeCore::attach_graph(Graph* g, const char* what) {
  if (!graph) {
    auto r = std::make_unique<Rank>(rank_setup(*this, 0));
    r->attach(*g);
    rank = std::move(r);
    graph = g;
  } else if (graph != g) {
    throw ArgumentError(std::string("Runtime::") + what +
                        ": all functions of a runtime must belong to one Graph (this one is another)");
  }
}

int RuntimeCore::add_def(const FunctionDef& d) {
  validate_function_def(graph->nodes(), d);
  defs.push_back(d);
  return static_cast<int>(defs.size() - 1);
}

int32_t RuntimeCore::var_id(const VarRef& v, const char* what) {
  if (!graph) throw ArgumentError(std::string("Runtime::") + what + ": no function was made yet (no graph)");
  Tensor t = v.tensor();
  if (!t.valid()) {
    if (!graph->contains(v.name()))
      throw ArgumentError(std::string("Runtime::") + what + ": no variable named '" + v.name() + "'");
    t = graph->find(v.name());
  }
  if (&t.graph() != graph)
    throw ArgumentError(std::string("Runtime::") + what + ": the tensor is not of the runtime's graph");
  if (t.node().op != Op::Variable)
    throw ArgumentError(std::string("Runtime::") + what + ": '" + t.name() + "' is not a shared variable");
  if (static_cast<size_t>(t.id()) >= distributed_nodes)
    throw ArgumentError(std::string("Runtime::") + what + ": variable '" + t.name() +
                        "' was made after the last distribute(); call distribute() again");
  return t.id();
}

}  // namespace detail

// ---- public API --------------------------------------------------------------------------

using detail::RuntimeCore;

Runtime::Runtime() = default;
Runtime::Runtime(std::shared_ptr<RuntimeCore> core) : impl_(std::move(core)) {}
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&& o) noexcept {
  if (this != &o) {
    if (impl_) impl_->close_from_api(impl_, false);
    impl_ = std::move(o.impl_);
  }
  return *this;
}
Runtime::~Runtime() {
  if (impl_) impl_->close_from_api(impl_, false);
}

bool Runtime::is_open() const { return impl_ && impl_->open; }
int Runtime::size() const { return is_open() ? impl_->world : 0; }
int Runtime::node() const { return is_open() ? impl_->node : 0; }
int Runtime::nodes() const { return is_open() ? impl_->nodes : 1; }
int Runtime::local_size() const { return is_open() ? impl_->n : 0; }
int Runtime::rank() const { return is_open() ? impl_->base : 0; }

RuntimeCore& Runtime::checked(const char* what) const {
  if (!impl_)
    throw ArgumentError(std::string("Runtime::") + what +
                        ": the runtime was never started in this process (call synk::fork; in a worker process, "
                        "e.g. a map job, it is an empty copy made before fork returned)");
  if (!impl_->usable()) impl_->check_usable(what);
  return *impl_;
}

void Runtime::close() {
  if (impl_) impl_->close_from_api(impl_, true);
}

void Runtime::heal() {
  if (!impl_ || !impl_->open) throw ArgumentError("Runtime::heal: the runtime is not open");
  RuntimeCore& c = *impl_;
  if (detail::self_pid() != c.master_pid)
    throw ArgumentError("Runtime::heal: called in a worker process (pid " + std::to_string(::getpid()) +
                        "); only the master (pid " + std::to_string(c.master_pid) + ") may heal the runtime");
  // keep_jobs: a failed stream of async jobs is ended by heal, not finished.
  detail::Busy busy(c, "heal", true);
  if (!c.failed.load()) {
    // Several nodes: a failure notice from another node that this node's
    // calls have not seen yet fails it too, so that it heals with the others.
    if (!c.multi()) return;
    const std::string peer = c.link->peer_failure();
    if (peer.empty()) return;
    c.fail(peer, -1);
  }
  c.heal("heal");
}

namespace detail {

namespace {

// Events per rank in the timeline's segment: 32 bytes each, and the
// segment's pages are only allocated as ranks write them (a few events per
// call), so this costs nothing until used and holds about 100,000 calls.
constexpr uint64_t kTraceEvents = uint64_t{1} << 20;

// The timeline's file: RuntimeOptions::trace, else SYNK_TRACE, else none
// (""). A path that cannot be written is refused now, before any process is
// made, not found after the run. A relative path is made absolute now: the
// file is written at close(), when the current directory may be another.
std::string trace_path_of(const RuntimeOptions& o) {
  const char* env = std::getenv("SYNK_TRACE");
  const char* given = o.trace && *o.trace ? o.trace : env && *env ? env : nullptr;
  if (!given) return "";
  std::string path = given;
  if (path[0] != '/') {
    std::vector<char> cwd(4096);
    while (!::getcwd(cwd.data(), cwd.size())) {
      if (errno != ERANGE)
        throw ArgumentError("synk::fork: the trace path '" + path + "' is relative and " + errno_text("getcwd"));
      cwd.resize(cwd.size() * 2);
    }
    path = std::string(cwd.data()) + "/" + path;
  }
  const std::string probe = path + ".tmp";
  FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f)
    throw ArgumentError(std::string("synk::fork: cannot write the trace '") + given + "': " + std::strerror(errno));
  std::fclose(f);
  std::remove(probe.c_str());
  return path;
}

// Every rank records into its log in one shared segment, sent to the
// workers like a Data segment; close() writes the file.
void start_trace(RuntimeCore& c, const std::string& path) {
  if (path.empty()) return;
  c.trace_path = path;
  // Several nodes: node k > 0 writes "<name>.node<k><.ext>" beside node 0's file.
  if (c.multi() && c.node > 0) {
    const size_t slash = path.find_last_of('/'), dot = path.find_last_of('.');
    const size_t at = dot != std::string::npos && (slash == std::string::npos || dot > slash) ? dot : path.size();
    c.trace_path = path.substr(0, at) + ".node" + std::to_string(c.node) + path.substr(at);
  }
  c.trace = std::make_unique<trace::Logs>(c.n, kTraceEvents);
  if (c.n > 1) {
    const uint64_t id = c.publish(c.trace->segment(), -1);
    std::atomic_ref<uint64_t>(c.cb->trace_seg).store(id, std::memory_order_release);
  }
  c.trace->attach(0);
}

// Every rank's training-step phases (Runtime::stats): always kept, the
// segment is sparse until steps are recorded.
void start_steps(RuntimeCore& c) {
  c.steps = std::make_unique<trace::StepLogs>(c.n);
  if (c.n > 1) {
    const uint64_t id = c.publish(c.steps->segment(), -1);
    std::atomic_ref<uint64_t>(c.cb->steps_seg).store(id, std::memory_order_release);
  }
  c.steps->attach(0);
}

}  // namespace

}  // namespace detail

namespace detail {

void RuntimeCore::start_worker(ForkServer& server, int r, int sock) {
  WorkerStart w;
  w.rank = r;
  w.ranks = n;
  w.master_pid = master_pid;
  w.cpu = worker_cpus[static_cast<size_t>(r)];
  w.device = static_cast<uint8_t>(device);
  w.comm_kind = static_cast<uint8_t>(comm_kind);
  w.comm = static_cast<uint8_t>(opts.comm);
  w.gpus = gpus;
  w.seed = opts.seed;
  w.spin_ns = spin_ns;
  w.collective_timeout_ms = opts.collective_timeout.count();
  w.timeout_ms = opts.timeout.count();
  w.bucket_bytes = opts.bucket_bytes;
  pid_t pid = -1;
  try {
    pid = server.spawn(w, ctl_seg.fd(), group->segment_fd(), sock);
  } catch (...) {
    ::close(sock);
    throw;
  }
  ::close(sock);
  pids[static_cast<size_t>(r)] = pid;
  pidfds[static_cast<size_t>(r)] = pidfd_open(pid);
  if (pidfds[static_cast<size_t>(r)] < 0) {
    const std::string err = errno_text("pidfd_open");
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pids[static_cast<size_t>(r)] = 0;
    throw BackendError("synk::fork: " + err + " for worker rank " + std::to_string(r));
  }
}

}  // namespace detail

Runtime fork(const RuntimeOptions& opts) {
  using namespace detail;
  const std::string trace_path = trace_path_of(opts);
  const std::vector<int> cpus = usable_cpus();
  if (opts.workers < 0 || opts.workers > kMaxRanks)
    throw ArgumentError("synk::fork: workers must be 0 (one per GPU, or per CPU) or in [1, " +
                        std::to_string(kMaxRanks) + "], got " + std::to_string(opts.workers));
  const std::string device = opts.device ? opts.device : "";
  if (device != "cpu" && device != "cuda" && device != "auto")
    throw ArgumentError("synk::fork: device '" + device + "' is not one of \"cpu\", \"cuda\", \"auto\"");
  if (opts.timeout.count() <= 0 || opts.collective_timeout.count() <= 0)
    throw ArgumentError("synk::fork: timeout and collective_timeout must be positive, got " +
                        std::to_string(opts.timeout.count()) + " ms and " +
                        std::to_string(opts.collective_timeout.count()) + " ms");
  if (!(opts.stall_after_s >= 0) || opts.stall_after_s > 1e9)
    throw ArgumentError("synk::fork: stall_after_s must be 0 (off) or a positive number of seconds, got " +
                        std::to_string(opts.stall_after_s));
  if (opts.close_timeout.count() < 0)
    throw ArgumentError("synk::fork: close_timeout must not be negative, got " +
                        std::to_string(opts.close_timeout.count()) + " ms");
  if (opts.spin.count() < 0)
    throw ArgumentError("synk::fork: spin must not be negative, got " + std::to_string(opts.spin.count()) + " ns");
  if (opts.deterministic_chunks < 1 || opts.deterministic_chunks > static_cast<int>(kMaxChunks))
    throw ArgumentError("synk::fork: deterministic_chunks must be in [1, " + std::to_string(kMaxChunks) + "], got " +
                        std::to_string(opts.deterministic_chunks));
  if (static_cast<uint8_t>(opts.comm) > static_cast<uint8_t>(CommBackend::host_staged))
    throw ArgumentError("synk::fork: comm " + std::to_string(static_cast<int>(opts.comm)) +
                        " is not a synk::CommBackend (automatic, nccl, host_staged)");
  bool cuda = false, nccl = false;
  int gpus = 0;
  if (device != "cpu") {
    check_cuda_fork(device.c_str());
    std::string why;
    gpus = test_hooks().fake_gpu_count >= 0 ? test_hooks().fake_gpu_count : cuda_devices(&why);
    if (gpus == 0 && why.empty()) why = "no CUDA device is visible";
    cuda = device == "cuda" || gpus > 0;
    if (cuda && gpus == 0) throw BackendError("synk::fork: device 'cuda' but " + why);
  }
  // workers = 0: one rank per visible GPU for CUDA ranks, else per usable CPU.
  // workers = 0: SYNK_WORKERS if set; else one rank per visible GPU for
  // CUDA ranks, or for CPU ranks OMP_NUM_THREADS if set, else cpu_count().
  const int from_env = opts.workers != 0 ? 0 : default_workers(cuda);
  const int n = opts.workers != 0 ? opts.workers : std::min(from_env > 0 ? from_env : gpus, kMaxRanks);
  if (cuda) {
    if (n > gpus && opts.comm != CommBackend::host_staged)
      throw ArgumentError("synk::fork: " + std::to_string(n) + " CUDA workers but " + std::to_string(gpus) +
                          " visible GPU(s); more workers than GPUs need comm = CommBackend::host_staged");
    nccl = cuda && want_nccl(opts.comm, n, gpus);
  }
  bool expected = false;
  if (!g_open.compare_exchange_strong(expected, true))
    throw ArgumentError("synk::fork: a runtime is already open in this process (close it first)");

  std::erase_if(deferred_cores(), [](const auto& p) { return !p->busy.load(); });
  auto core = std::make_shared<RuntimeCore>();
  RuntimeCore& c = *core;
  c.gen = next_unique_id();
  std::vector<int> child_end;
  try {
    // Before any segment or socket exists, so the server holds none of them.
    ForkServer& server = fork_server_for(cuda, device.c_str());
    c.opts = opts;
    c.n = n;
    c.device = cuda ? Device::cuda : Device::cpu;
    c.comm_kind = !cuda ? comm::CommKind::host : nccl ? comm::CommKind::nccl : comm::CommKind::host_staged;
    c.gpus = gpus;
    c.master_pid = ::getpid();
    c.cpus = cpus;
    c.spin_ns = n > static_cast<int>(cpus.size()) ? 2000 : std::max<int64_t>(0, opts.spin.count());
    c.ctl_seg = comm::SharedSegment::create(sizeof(ControlBlock), "synk-control");
    c.cb = static_cast<ControlBlock*>(c.ctl_seg.data());
    c.world = n;
    c.node_sizes = {n};
    c.cb->nodes = 1;
    c.cb->node_sizes[0] = n;
    if (want_nodes(opts)) {
      // CUDA ranks of several nodes: the nodes decide NCCL and each rank's
      // GPU jointly there (plan_node_gpus).
      join_nodes(c, n);
    }
    // Several nodes on one machine (a test, or a fat node split in two):
    // each pins its ranks after those of the nodes before it there. If
    // together they outnumber the cores, nobody is pinned (measured: any
    // fixed placement puts two node masters, who talk to each other over
    // MPI, or a master and the rank it waits for, on one core; the
    // scheduler does better) and waiting ranks spin briefly, as one
    // node's do (RuntimeOptions::spin).
    const bool crowded = c.link && static_cast<size_t>(c.place.ranks) > cpus.size();
    const int pin_first = c.link ? c.place.first : 0;
    const bool pin = opts.pin && !crowded;
    if (crowded) c.spin_ns = 2000;
    c.group = std::make_unique<comm::CpuGroup>(comm::CpuGroupOptions{
        .ranks = n, .spin = std::chrono::nanoseconds(c.spin_ns), .timeout = opts.collective_timeout});
    c.pids.assign(static_cast<size_t>(n), 0);
    c.pidfds.assign(static_cast<size_t>(n), -1);
    c.socks.assign(static_cast<size_t>(n), -1);
    c.results.resize(static_cast<size_t>(n));
    c.result_ids.assign(static_cast<size_t>(n), 0);
    c.pids[0] = c.master_pid;
    child_end.assign(static_cast<size_t>(n), -1);
    for (int r = 1; r < n; ++r) {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        throw BackendError("synk::fork: " + errno_text("socketpair"));
      c.socks[static_cast<size_t>(r)] = sv[0];
      child_end[static_cast<size_t>(r)] = sv[1];
      ::fcntl(sv[0], F_SETFL, ::fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    }
    c.open = true;
    {
      // Workers come from the fork server (made at the top of fork()) and
      // are re-parented to this process: see fork_server.hpp.
      SubreaperScope reaper;
      c.worker_cpus.assign(static_cast<size_t>(n), -1);
      for (int r = 1; r < n; ++r) {
        c.worker_cpus[static_cast<size_t>(r)] = pin ? cpus[static_cast<size_t>(pin_first + r) % cpus.size()] : -1;
        const int sock = child_end[static_cast<size_t>(r)];
        child_end[static_cast<size_t>(r)] = -1;
        c.start_worker(server, r, sock);
      }
    }
    // CPU ranks of one node: the server's work is done. Several nodes keep
    // it, made before MPI was initialised, for heal() to fork from.
    release_fork_server(cuda || c.link != nullptr);
    c.group->bind(0);
    if (pin) {
      note_unpinned_cpus(static_cast<int>(cpus.size()));  // cpu_count() keeps saying what the process may use
      c.old_affinity.resize(sizeof(cpu_set_t));
      if (::sched_getaffinity(0, sizeof(cpu_set_t), reinterpret_cast<cpu_set_t*>(c.old_affinity.data())) == 0) {
        c.affinity_saved = true;
        pin_to(cpus[static_cast<size_t>(pin_first) % cpus.size()]);
      }
    }
    if (n > 1) {
      c.stop_efd = ::eventfd(0, EFD_CLOEXEC);
      if (c.stop_efd < 0) throw BackendError("synk::fork: " + errno_text("eventfd"));
      c.watcher = std::thread([&c] { c.watch(); });
    }
    start_trace(c, trace_path);
    start_steps(c);
    // This process is rank 0: its spans go on the board too, and with
    // workers to wait for, the stall watcher looks at them all.
    if (opts.stall_after_s > 0 && (n > 1 || c.multi())) {
      trace::g_activity = &c.cb->slots[0].doing;
      c.start_stall_watcher();
    }
  } catch (...) {
    for (int fd : child_end)
      if (fd >= 0) ::close(fd);
    // Kill what was started; reap synchronously (the watcher is not running).
    c.stopping.store(true);
    for (int r = 1; r < n && r < static_cast<int>(c.pids.size()); ++r) {
      if (c.pids[static_cast<size_t>(r)] > 0) {
        ::kill(c.pids[static_cast<size_t>(r)], SIGKILL);
        ::waitpid(c.pids[static_cast<size_t>(r)], nullptr, 0);
        c.reaped.fetch_add(1);
      }
    }
    c.reaped.store(n);  // nothing left to wait for
    c.close();
    g_open.store(false);
    throw;
  }
  return Runtime(std::move(core));
}

}  // namespace synk
