// src/comm/node_link.hpp — the node masters of a multi-node job, joined by
// MPI (private header; docs/multinode.md has the model).
//
// Only node masters are MPI processes: the launcher (mpirun, srun) starts one
// process per node, each becomes its node's master and forks its workers,
// which never touch MPI. A NodeLink is the master's end of the inter-node
// level: it starts MPI (MPI_Init_thread, unless the program already did) and
// runs the few collectives the hierarchical comm (comm/node_comm.hpp) and the
// runtime (results, agreement checks) need, on host memory.
//
// Why non-blocking requests polled by hand instead of blocking MPI calls:
// a blocking call cannot be left, so a master waiting for a node that will
// never come (its worker died, it runs different code) would hang the job.
// Every wait here spins briefly, then yields and sleeps, and between tests
// calls `check` (which throws when this node's runtime failed), watches the
// timeout, and listens for a failure notice from another node: a node whose
// runtime fails sends one to every other (notify_failure), so their pending
// or next wait throws a BackendError naming that node at once.
//
// This header includes no MPI header: a build without MPI compiles it, and
// launched()/join() say what is missing.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/cpu_group.hpp"  // ElemType, ReduceOp

namespace synk::comm {

// How this process was started: by a launcher with more than one process
// (OpenMPI's mpirun, Slurm's srun, a PMI/PMIx launcher), seen in the
// environment without starting MPI. `how` names the variables that said so.
struct Launch {
  int processes = 1;  // 1: not under a multi-process launcher
  int index = 0;      // this process's index among them
  std::string how;
};
Launch detect_launch();

// Whether this build can join nodes (SYNK_HAVE_MPI).
bool mpi_available() noexcept;

struct NodeLinkOptions {
  std::chrono::milliseconds timeout = std::chrono::seconds(60);  // every wait
  int64_t spin_ns = 100'000;                                     // test in a loop this long before yielding
  // Called between tests of a pending request; throws to give the wait up
  // (e.g. this node's runtime failed). May be empty.
  std::function<void()> check;
};

class NodeLink {
 public:
  // Starts MPI if the program has not (MPI_THREAD_SERIALIZED: the master's
  // calls come from one thread at a time) and duplicates MPI_COMM_WORLD.
  // Throws ArgumentError in a build without MPI, BackendError if MPI fails.
  static std::unique_ptr<NodeLink> join(const NodeLinkOptions& opts);
  ~NodeLink();

  int node() const noexcept { return node_; }
  int nodes() const noexcept { return nodes_; }
  const std::string& host() const noexcept { return host_; }
  // This node's index among the job's processes on the same machine (0
  // when alone there): several "nodes" on one machine pin their ranks to
  // different CPUs by it.
  int host_index() const noexcept { return host_index_; }
  int host_count() const noexcept { return host_count_; }  // the job's processes on this machine
  // The lowest node index on this machine: nodes with the same value share
  // it (and may share its GPUs).
  int host_leader() const noexcept { return host_leader_; }
  void set_check(std::function<void()> check) { opts_.check = std::move(check); }

  // In place: every node gets the reduction (sum, max, min, prod; avg is
  // the caller's: sum, then divide) of every node's buf, bitwise the same
  // on every node.
  void all_reduce(void* buf, size_t count, ElemType t, ReduceOp op, const char* what);
  // buf (bytes) from node `root` to every node.
  void broadcast(void* buf, size_t bytes, int root, const char* what);
  // Node k's block of counts[k] elements sits at displacement sum(counts[<k])
  // of buf; afterwards every node's buf holds every block (in place).
  void all_gatherv(void* buf, std::span<const size_t> counts, ElemType t, const char* what);
  // Node blocks (counts[k] elements) to root's `all` in node order; `mine`
  // may be inside root's `all` at its block (then it is not copied).
  void gatherv(const void* mine, void* all, std::span<const size_t> counts, ElemType t, int root, const char* what);
  // Root's `all` (node blocks in order) to every node's `mine`; on root,
  // `mine` may be its block inside `all`.
  void scatterv(const void* all, void* mine, std::span<const size_t> counts, ElemType t, int root, const char* what);
  // Every node's bytes, concatenated in node order; sizes (optional) gets
  // each node's byte count.
  std::vector<uint8_t> all_gather_bytes(std::span<const uint8_t> mine, std::vector<size_t>* sizes, const char* what);

  // Tells every other node that this node failed (best effort, never
  // throws, once): their waits then throw BackendError quoting `msg`.
  void notify_failure(const std::string& msg) noexcept;
  // A failure notice from another node, if one arrived ("" if none); does
  // not wait.
  std::string peer_failure();

  // Brings the link back to a known state after a failure (Runtime::heal
  // across nodes); every node must call it, and it waits at most the
  // timeout for them. Why new communicators rather than draining the old
  // ones: a failure leaves each node's exchanges at a different point (the
  // node that noticed first posted none, another may have a collective
  // posted that its peers never will), and MPI can neither cancel nor free
  // a pending collective. So the old communicators and their requests are
  // set aside untouched, fresh ones are duplicated from MPI_COMM_WORLD
  // (which synk uses for nothing else, so every node's duplicates match),
  // and whatever was in flight on the old ones, failure notices included,
  // can never be matched again. The generation, which every node must have
  // reached alike, is checked over the new link: a node that is not healing
  // (it closed, forked again, or called something else) gets an error
  // instead of a mismatched exchange. Before it returns, the collectives
  // this node gave up on that every node had posted are waited for (the
  // renewal's exchange says how many each node posted), so none of them
  // writes into its caller's buffers afterwards. Throws BackendError naming
  // the nodes on a timeout or a mismatch.
  void renew(const char* what);
  uint64_t generation() const noexcept { return generation_; }
  // Given-up collectives on this node that a renewal could not finish:
  // some node never posted them, yet this node's part may still complete
  // (and write into its caller's buffers) on a retired communicator.
  // Collectives every node posted are finished by renew() (tests).
  uint64_t stranded() const noexcept { return stranded_; }
  // Given-up collectives on the current communicator (renew() finishes or
  // strands them).
  size_t abandoned() const noexcept;

  struct Impl;

 private:
  NodeLink() = default;
  NodeLinkOptions opts_;
  int node_ = 0, nodes_ = 1, host_index_ = 0, host_count_ = 1, host_leader_ = 0;
  uint64_t generation_ = 0;  // renewals so far
  uint64_t stranded_ = 0;
  std::string host_;
  std::unique_ptr<Impl> impl_;
};

// Ends MPI for a process whose runtime ended normally (called at exit);
// a process that saw a failure leaves it unfinished, so the launcher sees an
// abnormal end and stops the other nodes.
void note_mpi_failure() noexcept;
// Says, before the runtime fails, that every node sees this failure at the
// same point: a refused call check, whose exchange completed on every node.
// Then nothing of MPI is pending anywhere and no node waits for another, so
// the failure leaves MPI to end normally at exit (a program that catches the
// error and closes ends with its own status, 0 included) and sends no
// notice (every node knows). Holds until the next NodeLink::join.
void note_agreed_failure() noexcept;

}  // namespace synk::comm
