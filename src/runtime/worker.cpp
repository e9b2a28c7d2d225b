// src/runtime/worker.cpp — the loop a forked worker runs until the master
// says stop (or dies: PR_SET_PDEATHSIG kills the worker with it).
//
// A worker never returns into the user's program: it ends with _exit(),
// which is the worker process's own end (no atexit handlers, no flushing of
// stdio buffers inherited from the master). Every exception of a command is
// caught and reported through the worker's slot; in commands that enter
// collectives the worker also aborts the CpuGroup so no peer waits for it.
//
// Validation: a worker trusts nothing it reads. It copies the command header
// once (so it checks and uses the same values), checks the command kind, that
// every segment id is known and every size and offset lies inside its
// mapping, that function and variable ids exist, and that segment messages
// from its socket describe real memfds of at least the stated size; a bad
// command becomes a reported exception (FormatError), never a wild access.
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "comm/futex.hpp"
#include "runtime/core.hpp"
#include "synk/serialize.hpp"

namespace synk::detail {

namespace {

template <class T> std::atomic_ref<T> at(T& x) { return std::atomic_ref<T>(x); }

struct Mapping {
  uint8_t* p = nullptr;
  size_t size = 0;
};

class Worker {
 public:
  Worker(RuntimeCore& c, int rank)
      : c_(c), rank_(rank), cb_(c.cb), sock_(c.socks[static_cast<size_t>(rank)]), me_(rank_setup(c, rank)) {}

  [[noreturn]] void run() {
    c_.group->bind(rank_);
    // What this rank does, for the master's stall watcher (none when it is off).
    if (c_.opts.stall_after_s > 0) trace::g_activity = &cb_->slots[rank_].doing;
    const int64_t spin = c_.spin_ns;
    uint32_t last = 0;
    for (;;) {
      // Wait for the next command: spin, then sleep on the futex.
      const int64_t t_wait = trace::on() ? trace::now_ns() : 0;
      auto seq = at(cb_->seq);
      uint32_t s = seq.load(std::memory_order_acquire);
      if (s == last) {
        const int64_t t0 = comm::monotonic_ns();
        for (uint32_t i = 1;; ++i) {
          comm::cpu_relax();
          s = seq.load(std::memory_order_acquire);
          if (s != last) break;
          if ((i & 255) == 0 && comm::monotonic_ns() - t0 >= spin) break;
        }
        while (s == last) {
          at(cb_->sleepers).fetch_add(1, std::memory_order_seq_cst);
          s = seq.load(std::memory_order_seq_cst);
          if (s == last) comm::futex_wait(&cb_->seq, last, 1'000'000'000);
          at(cb_->sleepers).fetch_sub(1, std::memory_order_seq_cst);
          s = seq.load(std::memory_order_acquire);
          if (s == last && ::getppid() != c_.master_pid) ::_exit(0);  // orphaned
        }
      }
      last = s;
      if (trace::on()) trace::record(trace::Kind::wait, t_wait, trace::now_ns(), 0, -1);
      // One private copy of the header: what is checked is what is used.
      hdr_ = cb_->cmd;
      if (static_cast<Cmd>(hdr_.kind) == Cmd::stop) ::_exit(0);
      WorkerSlot& slot = cb_->slots[rank_];
      slot.status = 0;
      try {
        if (auto* hook = test_hooks().on_command) hook(static_cast<int>(hdr_.kind), rank_, hdr_);
        drain();
        trace::Span span(trace::Kind::command, hdr_.call_no);
        execute(static_cast<Cmd>(hdr_.kind));
      } catch (const std::exception& e) {
        report(slot, static_cast<Cmd>(hdr_.kind), e.what());
      } catch (...) {
        report(slot, static_cast<Cmd>(hdr_.kind), "unknown exception");
      }
      at(slot.done).store(s, std::memory_order_seq_cst);
      if (at(slot.master_waits).load(std::memory_order_seq_cst) != 0) comm::futex_wake(&slot.done);
    }
  }

 private:
  void report(WorkerSlot& slot, Cmd cmd, const char* what) {
    std::string m = std::string(cmd_name(cmd)) + " (pid " + std::to_string(::getpid()) + "): " + what;
    const size_t n = std::min(m.size(), sizeof slot.msg - 1);
    std::memcpy(slot.msg, m.data(), n);
    slot.msg[n] = '\0';
    slot.status = 1;
    if (hdr_.collective) c_.group->abort("rank " + std::to_string(rank_) + ": " + m);
  }

  // Takes the segment messages the master has sent since the last time
  // (adds carry an fd); none sent, no system call.
  void drain() {
    const uint32_t sent = at(cb_->slots[rank_].seg_msgs).load(std::memory_order_acquire);
    while (seg_seen_ != sent) {
      SegMsg m{};
      iovec iov{&m, sizeof m};
      alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
      msghdr h{};
      h.msg_iov = &iov;
      h.msg_iovlen = 1;
      h.msg_control = ctl;
      h.msg_controllen = sizeof ctl;
      ssize_t got = ::recvmsg(sock_, &h, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
      if (got < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          throw FormatError("corrupt control block: " + std::to_string(sent - seg_seen_) +
                            " segment message(s) announced but none on the socket");
        throw BackendError(std::string("recvmsg on the runtime socket: ") + std::strerror(errno));
      }
      if (got == 0) ::_exit(0);  // the master closed its end
      ++seg_seen_;
      int fd = -1;
      for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
      if (m.op == 1) {
        // The fd must be a memfd at least as large as stated (a larger
        // mapping would SIGBUS on access) under a fresh id.
        struct stat st{};
        if (fd < 0 || m.id == 0 || segs_.count(m.id) || ::fstat(fd, &st) != 0 ||
            static_cast<uint64_t>(st.st_size) < m.size) {
          if (fd >= 0) ::close(fd);
          throw FormatError("corrupt segment message (id " + std::to_string(m.id) + ", " + std::to_string(m.size) +
                            " bytes)");
        }
        Mapping mp;
        mp.size = m.size;
        if (m.size > 0) {
          void* p = ::mmap(nullptr, m.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
          if (p == MAP_FAILED) {
            int err = errno;
            if (fd >= 0) ::close(fd);
            throw BackendError(std::string("mmap of a shared segment: ") + std::strerror(err));
          }
          mp.p = static_cast<uint8_t*>(p);
        }
        if (fd >= 0) ::close(fd);
        segs_[m.id] = mp;
        // The timeline's logs: this rank records into its own from now on.
        if (m.id == at(cb_->trace_seg).load(std::memory_order_acquire))
          trace::Logs::attach(mp.p, mp.size, rank_, c_.n);
        // The training steps' phases: this rank's ring.
        if (m.id == at(cb_->steps_seg).load(std::memory_order_acquire))
          trace::StepLogs::attach(mp.p, mp.size, rank_, c_.n);
      } else if (m.op == 2) {
        auto it = segs_.find(m.id);
        if (it != segs_.end()) {
          me_.unpin(m.id);
          if (it->second.p) ::munmap(it->second.p, it->second.size);
          segs_.erase(it);
        }
      } else if (fd >= 0) {
        ::close(fd);
      }
    }
  }

  Mapping seg(uint64_t id) const {
    auto it = segs_.find(id);
    if (it == segs_.end()) throw FormatError("corrupt command: unknown shared segment id " + std::to_string(id));
    return it->second;
  }

  // The command's arguments: a known segment holding args_bytes.
  uint8_t* args() const {
    const Mapping m = seg(hdr_.args_id);
    if (hdr_.args_bytes > m.size)
      throw FormatError("corrupt command: " + std::to_string(hdr_.args_bytes) + " argument bytes in a segment of " +
                        std::to_string(m.size));
    return m.p;
  }

  // A shared variable's size in bytes, after checking the id.
  size_t variable(int32_t var) const {
    if (!me_.ready()) throw BackendError("variable access before distribute");
    const Graph& g = *me_.graph();
    if (var < 0 || static_cast<size_t>(var) >= g.size() || g.node(var).op != Op::Variable)
      throw FormatError("corrupt command: " + std::to_string(var) + " is not a variable id");
    const Node& n = g.node(var);
    return static_cast<size_t>(numel(n.shape)) * dtype_size(n.dtype);
  }

  void execute(Cmd cmd) {
    switch (cmd) {
      case Cmd::sync: return;
      case Cmd::distribute: return distribute();
      case Cmd::call: return call();
      case Cmd::collective: return me_.run_var_ops(args(), hdr_.args_bytes, nullptr);
      case Cmd::var_get: {
        const VarAccess g = decode_var_get(args(), hdr_.args_bytes);
        const int32_t var = g.var;
        if (g.rank != rank_) return;
        Mapping out = seg(hdr_.result_id[rank_]);
        const size_t nb = variable(var);
        me_.read_variable(var, var_value_slot(out.p, out.size, nb), nb);
        return;
      }
      case Cmd::var_set: {
        const VarAccess s = decode_var_set(args(), hdr_.args_bytes);
        if (s.rank >= 0 && s.rank != rank_) return;
        const size_t nb = variable(s.var);
        if (nb > s.value_bytes)
          throw FormatError("corrupt command: the value of variable " + std::to_string(s.var) + " lies outside the arguments");
        me_.write_variable(s.var, s.value, nb);
        return;
      }
      case Cmd::jobs:
        return run_jobs_worker(cb_, args(), hdr_.args_bytes, rank_, c_.n, c_.spin_ns,
                               [this](uint64_t id) -> std::span<uint8_t> {
                                 auto it = segs_.find(id);
                                 if (it == segs_.end()) throw ArgumentError(unknown_segment(id));
                                 return {it->second.p, it->second.size};
                               });
      case Cmd::comm_init: return join_comm();
      default: throw FormatError("corrupt command: unknown command kind " + std::to_string(static_cast<uint32_t>(cmd)));
    }
  }

  void distribute() {
    trace::Span span(trace::Kind::distribute);
    auto g = std::make_unique<Graph>();
    std::vector<FunctionDef> defs = deserialize(args(), hdr_.args_bytes, *g);
    if (auto* hook = test_hooks().before_compile) hook(rank_);
    me_.replace(std::move(g), defs);
  }

  // Ranks whose comm is joined through bootstrap bytes (NCCL), after the
  // first distribute: the bytes node 0's master put in the control block.
  void join_comm() {
    const size_t nb = comm::bootstrap_bytes(c_.comm_kind);
    if (nb == 0) throw FormatError("corrupt command: a comm initialisation on ranks whose comm takes no bootstrap");
    me_.join_comm({cb_->comm_boot, nb});
  }

  void call() {
    if (!me_.ready()) throw BackendError("call before distribute");
    CallDesc d = decode_call(args(), hdr_.args_bytes, [this](uint64_t id) -> std::span<const uint8_t> {
      const Mapping m = seg(id);
      return {m.p, m.size};
    });
    if (at(cb_->grads_gen).load(std::memory_order_acquire) != me_.peer_gen()) map_grads();
    ShareResult r = me_.run_share(d);
    trace::Span span(trace::Kind::results, d.call_no, static_cast<int32_t>(d.fn));
    Mapping out = seg(hdr_.result_id[rank_]);
    write_result(r, out.p, out.size);
  }

  // The master's new shared gradient buffers (ControlBlock::grads_seg):
  // every rank's, from the segments already received.
  void map_grads() {
    const uint64_t bytes = cb_->grads_bytes;
    std::vector<void*> bufs(static_cast<size_t>(c_.n));
    for (int r = 0; r < c_.n; ++r) {
      const Mapping m = seg(cb_->grads_seg[r]);
      if (m.size < bytes) throw FormatError("corrupt command: a gradient buffer smaller than its stated size");
      bufs[static_cast<size_t>(r)] = m.p;
    }
    me_.map_peer_grads(std::move(bufs), bytes, cb_->grads_gen);
  }

  RuntimeCore& c_;
  int rank_;
  ControlBlock* cb_;
  int sock_;
  std::unordered_map<uint64_t, Mapping> segs_;
  uint32_t seg_seen_ = 0;  // segment messages taken from the socket
  CommandHeader hdr_{};
  Rank me_;  // this worker's rank: made with the process, computes from the first distribute
};

}  // namespace

void worker_main(RuntimeCore& core, int rank) noexcept {
  // Die with the master; a Ctrl-C is the master's to handle.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != core.master_pid) ::_exit(0);  // the master is already gone
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    Worker w(core, rank);
    w.run();
  } catch (...) {
  }
  ::_exit(70);
}

}  // namespace synk::detail
