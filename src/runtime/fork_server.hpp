// src/runtime/fork_server.hpp — the process the runtime forks its workers
// from (private header).
//
// Why: a process that has initialised CUDA cannot give a usable CUDA to the
// children it forks. A master with CUDA ranks makes its own CUDA context
// (it is rank 0), so once it has, it could never fork CUDA workers again:
// a crashed GPU worker would end the training run. The fork server is a
// child forked from the master while the master is still free of CUDA; it
// never touches CUDA, so workers forked from it can, whenever the master
// asks (the forkserver start method of Python's multiprocessing is the
// model).
//
// Workers stay the master's children: the server forks an intermediate
// process that forks the worker and exits at once, and the master is a
// child subreaper (PR_SET_CHILD_SUBREAPER) while it starts workers, so the
// orphaned worker is re-parented to it. The master therefore reaps its
// workers, reads their exit status, and the workers die with it
// (PR_SET_PDEATHSIG, set once re-parented) exactly as if it had forked them.
//
// A worker is a copy of the server, so it sees the program's memory as it
// was when the server was made; its side of the runtime (control block,
// CpuGroup, socket) arrives as file descriptors with a WorkerStart and is
// rebuilt in the worker (start_worker below).
//
// Which server: fork() makes a fresh one whenever this process is still
// free of CUDA (so workers see the program as it is at that fork(), as if
// forked directly) and, for CPU ranks, ends it once the workers are
// started. For CUDA ranks (whose master makes its own CUDA context) and once
// the process has initialised CUDA, the last clean server is kept for the
// life of the process and every later fork() uses it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>

namespace synk::detail {

// Everything a worker needs besides its three file descriptors (control
// block memfd, CpuGroup memfd, its end of the command socket).
struct WorkerStart {
  uint64_t magic = 0;
  int32_t rank = 0, ranks = 0;
  int32_t master_pid = 0;
  int32_t cpu = -1;  // pin to this CPU; -1: no pinning
  uint8_t device = 0, comm_kind = 0, comm = 0, pad = 0;  // synk::Device, comm::CommKind, CommBackend
  int32_t gpus = 0;
  uint64_t seed = 0;
  int64_t spin_ns = 0;                // the runtime's spin (and the CpuGroup's)
  int64_t collective_timeout_ms = 0;  // the CpuGroup's timeout
  int64_t timeout_ms = 0;
  uint64_t bucket_bytes = 0;          // RuntimeOptions::bucket_bytes
};

class ForkServer {
 public:
  // Forks the server from the calling thread now. Throws BackendError.
  static std::unique_ptr<ForkServer> start();
  ~ForkServer();  // asks the server to leave and reaps it; never throws
  ForkServer(const ForkServer&) = delete;
  ForkServer& operator=(const ForkServer&) = delete;

  // Starts one worker; returns its pid. The caller must be a child
  // subreaper (see SubreaperScope) so the worker becomes its child. Throws
  // BackendError if the server is gone or could not fork.
  pid_t spawn(const WorkerStart& w, int ctl_fd, int group_fd, int sock_fd);
  pid_t pid() const { return pid_; }

 private:
  ForkServer(pid_t pid, int sock) : pid_(pid), sock_(sock) {}
  pid_t pid_;
  int sock_;
};

// PR_SET_CHILD_SUBREAPER for the scope of starting workers (then restored),
// so that orphans elsewhere in the program's process tree are not adopted
// by it afterwards.
class SubreaperScope {
 public:
  SubreaperScope();
  ~SubreaperScope();
  SubreaperScope(const SubreaperScope&) = delete;
  SubreaperScope& operator=(const SubreaperScope&) = delete;

 private:
  int was_ = 0;
};

// Throws ArgumentError when the process has initialised CUDA and no server
// from before that exists (CUDA ranks could not work).
void check_cuda_fork(const char* device);
// The process-wide server for a fork() that wants CUDA ranks (`cuda`) or not:
// a fresh one while the process is free of CUDA, else the kept clean one
// (check_cuda_fork's refusal for CUDA ranks).
ForkServer& fork_server_for(bool cuda, const char* device);
// After the workers are started (keep_for_cuda: the ranks are CUDA ranks,
// so the master is about to make its own context) and at close(): ends the
// server unless it is clean and the process has initialised CUDA since, or
// is about to; such a server is kept for later forks. A runtime of several
// nodes passes keep too: its server, made before MPI was initialised, is
// the one heal() forks replacements from, until close(). Between forks of
// CPU ranks no server is left, so the master's children are its workers.
void release_fork_server(bool keep_for_cuda = false) noexcept;
// The server kept by release_fork_server, if any, without making one: a
// runtime of several nodes keeps the one made before MPI was initialised
// and heals from it (forking a process that holds MPI state is unsafe).
ForkServer* kept_fork_server() noexcept;
// The current server's pid, 0 if none (tests: it is a child of the master
// that is not a worker).
pid_t fork_server_pid() noexcept;

}  // namespace synk::detail
