// src/runtime/fork_server.cpp — see fork_server.hpp.
#include "runtime/fork_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "cuda/context.hpp"
#include "runtime/core.hpp"

namespace synk::detail {

namespace {

constexpr uint64_t kMagic = 0x73796e6b66726b31ull;  // "synkfrk1"
constexpr int kReplyTimeoutMs = 30'000;

std::string errno_text(const char* call, int err) { return std::string(call) + ": " + std::strerror(err); }

// One request: the WorkerStart and three fds (control, group, socket).
bool send_request(int sock, const WorkerStart& w, const int (&fds)[3]) {
  iovec iov{const_cast<WorkerStart*>(&w), sizeof w};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof fds)];
  std::memset(ctl, 0, sizeof ctl);
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  h.msg_control = ctl;
  h.msg_controllen = sizeof ctl;
  cmsghdr* c = CMSG_FIRSTHDR(&h);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof fds);
  std::memcpy(CMSG_DATA(c), fds, sizeof fds);
  for (;;) {
    if (::sendmsg(sock, &h, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof w)) return true;
    if (errno != EINTR) return false;
  }
}

// Receives a request; returns 0 on EOF, -1 on a malformed one (fds closed),
// 1 with the three fds filled.
int recv_request(int sock, WorkerStart& w, int (&fds)[3]) {
  iovec iov{&w, sizeof w};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof fds)];
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  h.msg_control = ctl;
  h.msg_controllen = sizeof ctl;
  ssize_t got;
  do got = ::recvmsg(sock, &h, MSG_CMSG_CLOEXEC);
  while (got < 0 && errno == EINTR);
  if (got <= 0) return 0;
  fds[0] = fds[1] = fds[2] = -1;
  int n = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    n = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    std::memcpy(fds, CMSG_DATA(c), sizeof(int) * static_cast<size_t>(std::min(n, 3)));
  }
  if (got != static_cast<ssize_t>(sizeof w) || w.magic != kMagic || n != 3 || (h.msg_flags & MSG_CTRUNC)) {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
    return -1;
  }
  return 1;
}

// In the new worker: wait to be re-parented to the master, then become a
// worker of its runtime. Never returns.
[[noreturn]] void become_worker(const WorkerStart& w, const int (&fds)[3]) noexcept {
  // The intermediate exits right after forking us; until it has, our parent
  // is the intermediate.
  for (int i = 0; ::getppid() != w.master_pid; ++i) {
    if (i > 200'000) ::_exit(0);  // ~10 s: the master is gone
    ::usleep(50);
  }
  if (w.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w.cpu, &set);
    ::sched_setaffinity(0, sizeof set, &set);  // best effort: a failure only costs speed
  }
  try {
    // Rebuilt from what the master sent; the worker ends with _exit, so the
    // core is never destroyed (its destructor would close the runtime).
    auto* c = new RuntimeCore();
    c->opts.comm = static_cast<CommBackend>(w.comm);
    c->opts.seed = w.seed;
    c->opts.spin = std::chrono::nanoseconds(w.spin_ns);
    c->opts.timeout = std::chrono::milliseconds(w.timeout_ms);
    c->opts.collective_timeout = std::chrono::milliseconds(w.collective_timeout_ms);
    c->opts.bucket_bytes = w.bucket_bytes;
    c->n = w.ranks;
    if (w.device > static_cast<uint8_t>(Device::cuda) || w.comm_kind > static_cast<uint8_t>(comm::CommKind::nccl))
      ::_exit(71);
    c->device = static_cast<Device>(w.device);
    c->comm_kind = static_cast<comm::CommKind>(w.comm_kind);
    c->gpus = w.gpus;
    c->master_pid = w.master_pid;
    c->spin_ns = w.spin_ns;
    c->ctl_seg = comm::SharedSegment::adopt(fds[0]);
    if (c->ctl_seg.size() < sizeof(ControlBlock)) ::_exit(71);
    c->cb = static_cast<ControlBlock*>(c->ctl_seg.data());
    // The node layout the master wrote before starting the workers.
    c->nodes = c->cb->nodes;
    c->node = c->cb->node;
    if (c->nodes < 1 || c->nodes > kMaxNodes || c->node < 0 || c->node >= c->nodes) ::_exit(71);
    c->node_sizes.assign(c->cb->node_sizes, c->cb->node_sizes + c->nodes);
    if (c->node_sizes[static_cast<size_t>(c->node)] != w.ranks) ::_exit(71);
    c->gpu_first = c->cb->gpu_first;
    if (c->gpu_first < 0) ::_exit(71);
    c->base = c->node_base(c->node);
    c->world = c->node_base(c->nodes);
    c->group = std::make_unique<comm::CpuGroup>(
        comm::CpuGroupOptions{.ranks = w.ranks,
                              .spin = std::chrono::nanoseconds(w.spin_ns),
                              .timeout = std::chrono::milliseconds(w.collective_timeout_ms)},
        comm::SharedSegment::adopt(fds[1]));
    c->socks.assign(static_cast<size_t>(w.ranks), -1);
    c->socks[static_cast<size_t>(w.rank)] = fds[2];
    c->open = true;
    worker_main(*c, w.rank);
  } catch (...) {
  }
  ::_exit(71);
}

// The server's loop: one worker per request, until the master closes its end.
[[noreturn]] void serve(int sock, pid_t master) noexcept {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != master) ::_exit(0);
  ::signal(SIGINT, SIG_IGN);  // a Ctrl-C is the master's to handle
  ::signal(SIGPIPE, SIG_IGN);
  for (;;) {
    WorkerStart w{};
    int fds[3];
    const int got = recv_request(sock, w, fds);
    if (got == 0) ::_exit(0);
    int32_t reply[2] = {-1, EPROTO};
    if (got > 0) {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) {
        reply[1] = errno;
      } else {
        const pid_t mid = ::fork();
        if (mid == 0) {
          ::close(p[0]);
          const pid_t worker = ::fork();
          if (worker == 0) {
            ::close(p[1]);
            ::close(sock);
            become_worker(w, fds);
          }
          const int32_t out[2] = {worker, worker < 0 ? errno : 0};
          [[maybe_unused]] auto k = ::write(p[1], out, sizeof out);
          ::_exit(0);  // orphans the worker: it goes to the master (subreaper)
        }
        ::close(p[1]);
        if (mid < 0) {
          reply[1] = errno;
        } else {
          ssize_t k;
          do k = ::read(p[0], reply, sizeof reply);
          while (k < 0 && errno == EINTR);
          if (k != static_cast<ssize_t>(sizeof reply)) reply[0] = -1;
          while (::waitpid(mid, nullptr, 0) < 0 && errno == EINTR) {
          }
        }
        ::close(p[0]);
      }
      for (int fd : fds) ::close(fd);
    }
    if (::send(sock, reply, sizeof reply, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof reply)) ::_exit(0);
  }
}

struct Registry {
  std::unique_ptr<ForkServer> server;
  bool clean = false;  // made while this process had not initialised CUDA
};
Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

std::unique_ptr<ForkServer> ForkServer::start() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw BackendError("synk::fork: " + errno_text("socketpair", errno) + " (fork server)");
  const pid_t master = ::getpid();
  std::fflush(nullptr);  // buffered output would be written again by the server's children
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    throw BackendError("synk::fork: " + errno_text("fork", err) + " (fork server)");
  }
  if (pid == 0) {
    ::close(sv[0]);
    serve(sv[1], master);
  }
  ::close(sv[1]);
  return std::unique_ptr<ForkServer>(new ForkServer(pid, sv[0]));
}

ForkServer::~ForkServer() {
  if (sock_ >= 0) ::close(sock_);  // EOF: the server leaves
  if (pid_ > 0) {
    // It leaves at once; a stuck one is killed after a second.
    for (int i = 0; i < 1000; ++i) {
      const pid_t r = ::waitpid(pid_, nullptr, WNOHANG);
      if (r == pid_ || (r < 0 && errno != EINTR)) return;
      ::usleep(1000);
    }
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

pid_t ForkServer::spawn(const WorkerStart& w0, int ctl_fd, int group_fd, int sock_fd) {
  WorkerStart w = w0;
  w.magic = kMagic;
  const int fds[3] = {ctl_fd, group_fd, sock_fd};
  const std::string who = "synk::fork: starting worker rank " + std::to_string(w.rank) + " through the fork server (pid " +
                          std::to_string(pid_) + ")";
  if (!send_request(sock_, w, fds)) throw BackendError(who + ": " + errno_text("sendmsg", errno));
  pollfd p{sock_, POLLIN, 0};
  int rc;
  do rc = ::poll(&p, 1, kReplyTimeoutMs);
  while (rc < 0 && errno == EINTR);
  if (rc == 0) throw BackendError(who + ": no answer within " + std::to_string(kReplyTimeoutMs / 1000) + " s");
  int32_t reply[2] = {-1, 0};
  ssize_t k;
  do k = ::recv(sock_, reply, sizeof reply, 0);
  while (k < 0 && errno == EINTR);
  if (k == 0) throw BackendError(who + ": the fork server has exited");
  if (k != static_cast<ssize_t>(sizeof reply)) throw BackendError(who + ": " + errno_text("recv", errno));
  if (reply[0] <= 0) throw BackendError(who + ": " + errno_text("fork", reply[1]));
  return reply[0];
}

SubreaperScope::SubreaperScope() {
  ::prctl(PR_GET_CHILD_SUBREAPER, &was_);
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    throw BackendError("synk::fork: " + errno_text("prctl(PR_SET_CHILD_SUBREAPER)", errno));
}

SubreaperScope::~SubreaperScope() { ::prctl(PR_SET_CHILD_SUBREAPER, was_); }

void check_cuda_fork(const char* device) {
  const Registry& r = registry();
  if (cuda_context_noted() && !(r.server && r.clean))
    throw ArgumentError(std::string("synk::fork: device '") + device +
                        "': this process has already initialised CUDA (a CudaSession, or a device query such as "
                        "synk::cuda::device_count()) and has no fork server from before that, so forked CUDA "
                        "workers could not use CUDA; make the first CUDA runtime before any other CUDA work "
                        "(CudaSession::available() may come before): later forks reuse the server made then");
}

ForkServer& fork_server_for(bool cuda, const char* device) {
  Registry& r = registry();
  if (!cuda_context_noted()) {
    r.server.reset();
    r.server = ForkServer::start();
    r.clean = true;
  } else if (cuda) {
    check_cuda_fork(device);
  } else if (!r.server) {
    r.server = ForkServer::start();  // CPU ranks: a server with CUDA in it will do
    r.clean = false;
  }
  return *r.server;
}

void release_fork_server(bool keep_for_cuda) noexcept {
  Registry& r = registry();
  // Kept once CUDA is initialised (or about to be): it is the only clean
  // source of workers.
  if (r.server && !(r.clean && (keep_for_cuda || cuda_context_noted()))) r.server.reset();
}

ForkServer* kept_fork_server() noexcept { return registry().server.get(); }

pid_t fork_server_pid() noexcept {
  const Registry& r = registry();
  return r.server ? r.server->pid() : 0;
}

}  // namespace synk::detail
