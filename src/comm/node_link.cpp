// src/comm/node_link.cpp — the node masters' MPI (see node_link.hpp).
#include "comm/node_link.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "comm/futex.hpp"
#include "synk/config.hpp"
#include "synk/error.hpp"

#if SYNK_HAVE_MPI
// The C API only: without these, mpi.h in C++ drags in the deprecated C++
// bindings, which live in another library.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace synk::comm {

namespace {

bool env_int(const char* name, int& out) {
  const char* v = std::getenv(name);
  if (!v || !*v) return false;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > INT_MAX) return false;
  out = static_cast<int>(x);
  return true;
}

// A failure that may leave MPI work pending here or a peer waiting for
// this node: MPI is then left unfinished at exit.
std::atomic<bool> g_failed{false};
// The runtime's failure is one every node saw at the same completed
// exchange (note_agreed_failure): it leaves MPI as it was.
std::atomic<bool> g_agreed{false};

}  // namespace

Launch detect_launch() {
  Launch l;
  int size = 0, rank = 0;
  // OpenMPI's mpirun; MPICH/Hydra and Intel MPI (PMI); Slurm's srun (inside
  // a job step only: a batch script has SLURM_NTASKS too but is one process).
  if (env_int("OMPI_COMM_WORLD_SIZE", size) && env_int("OMPI_COMM_WORLD_RANK", rank)) {
    l.how = "OMPI_COMM_WORLD_SIZE=" + std::to_string(size) + " (mpirun)";
  } else if (env_int("PMI_SIZE", size) && env_int("PMI_RANK", rank)) {
    l.how = "PMI_SIZE=" + std::to_string(size);
  } else if (int step = 0; env_int("SLURM_STEP_ID", step) && env_int("SLURM_NTASKS", size) &&
                           env_int("SLURM_PROCID", rank)) {
    l.how = "SLURM_NTASKS=" + std::to_string(size) + " (srun)";
  } else {
    return l;
  }
  l.processes = std::max(size, 1);
  l.index = rank;
  return l;
}

void note_mpi_failure() noexcept {
  if (!g_agreed.load()) g_failed.store(true);
}

void note_agreed_failure() noexcept { g_agreed.store(true); }

#if SYNK_HAVE_MPI

bool mpi_available() noexcept { return true; }

namespace {

constexpr int kNoticeTag = 7;
constexpr size_t kNoticeBytes = 1024;
bool g_we_initialised = false;

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // After a failure the other nodes may wait in MPI for this one: leaving
  // without MPI_Finalize makes the launcher end the whole job.
  if (!finalized && !g_failed.load()) MPI_Finalize();
}

std::string mpi_error(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(text, static_cast<size_t>(len));
}

MPI_Datatype mpi_type(ElemType t) {
  switch (t) {
    case ElemType::f32: return MPI_FLOAT;
    case ElemType::i32: return MPI_INT32_T;
    case ElemType::f64: return MPI_DOUBLE;
    case ElemType::i64: return MPI_INT64_T;
  }
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
    case ReduceOp::prod: return MPI_PROD;
    case ReduceOp::avg: break;
  }
  throw ArgumentError("NodeLink: avg is not an MPI reduction (reduce with sum, then divide)");
}

}  // namespace

struct NodeLink::Impl {
  MPI_Comm comm = MPI_COMM_NULL;    // the collectives
  MPI_Comm notice = MPI_COMM_NULL;  // failure notices
  MPI_Request notice_req = MPI_REQUEST_NULL;
  char notice_buf[kNoticeBytes] = {};
  std::string peer_msg;  // a notice that arrived
  bool notified = false;
  std::vector<uint8_t> tmp;
  // Communicators of earlier generations (renew), kept as they are: a
  // collective may still be pending on them, which MPI cannot cancel, and
  // freeing them would wait for it at MPI_Finalize.
  std::vector<MPI_Comm> retired;
  // Buffers of requests whose wait was given up (wait_keeping): MPI may
  // still complete such a request later, so they live as long as the link.
  std::vector<std::shared_ptr<void>> kept;
  // Collectives posted on `comm` so far (every node posts the same ones in
  // the same order, so the count numbers them alike everywhere), and the
  // requests whose wait was given up, by that number: renew() finishes
  // those every node had posted before the communicator is retired.
  uint64_t posted = 0;
  struct Abandoned {
    MPI_Request req;
    uint64_t seq;
  };
  std::vector<Abandoned> abandoned;
  bool renew_failed = false;  // a renewal timed out: its MPI_Comm_idup may still be pending
};

namespace {

int to_int(size_t x, const char* what) {
  if (x > static_cast<size_t>(INT_MAX))
    throw BackendError(std::string("NodeLink ") + what + ": " + std::to_string(x) +
                       " elements exceed MPI's int counts");
  return static_cast<int>(x);
}

}  // namespace

std::unique_ptr<NodeLink> NodeLink::join(const NodeLinkOptions& opts) {
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) {
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) throw BackendError("synk::fork: MPI_Init_thread failed: " + mpi_error(rc));
    g_we_initialised = true;
    std::atexit(finalize_at_exit);
  }
  // A new runtime: its failures count again (an agreed one ended the last).
  g_agreed.store(false);
  std::unique_ptr<NodeLink> l(new NodeLink());
  l->opts_ = opts;
  l->impl_ = std::make_unique<Impl>();
  Impl& m = *l->impl_;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &m.comm) != MPI_SUCCESS || MPI_Comm_dup(MPI_COMM_WORLD, &m.notice) != MPI_SUCCESS)
    throw BackendError("synk::fork: MPI_Comm_dup failed");
  MPI_Comm_set_errhandler(m.comm, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(m.notice, MPI_ERRORS_RETURN);
  MPI_Comm_rank(m.comm, &l->node_);
  MPI_Comm_size(m.comm, &l->nodes_);
  MPI_Comm same_host = MPI_COMM_NULL;
  l->host_leader_ = l->node_;
  if (MPI_Comm_split_type(m.comm, MPI_COMM_TYPE_SHARED, l->node_, MPI_INFO_NULL, &same_host) == MPI_SUCCESS) {
    MPI_Comm_rank(same_host, &l->host_index_);
    MPI_Comm_size(same_host, &l->host_count_);
    // Ordered by node index (the split's key): the first is the lowest.
    MPI_Bcast(&l->host_leader_, 1, MPI_INT, 0, same_host);
    MPI_Comm_free(&same_host);
  }
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(host, &len);
  l->host_.assign(host, static_cast<size_t>(len));
  MPI_Irecv(m.notice_buf, static_cast<int>(kNoticeBytes), MPI_CHAR, MPI_ANY_SOURCE, kNoticeTag, m.notice,
            &m.notice_req);
  return l;
}

NodeLink::~NodeLink() {
  if (!impl_ || g_failed.load()) return;  // a failed job: leave MPI alone, the launcher ends it
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // a link that outlived MPI (a static object destroyed after the atexit handler)
  Impl& m = *impl_;
  if (m.notice_req != MPI_REQUEST_NULL) {
    MPI_Cancel(&m.notice_req);
    MPI_Wait(&m.notice_req, MPI_STATUS_IGNORE);
  }
  MPI_Comm_free(&m.notice);
  MPI_Comm_free(&m.comm);
}

std::string NodeLink::peer_failure() {
  Impl& m = *impl_;
  if (m.peer_msg.empty() && m.notice_req != MPI_REQUEST_NULL) {
    int done = 0;
    MPI_Status st;
    MPI_Test(&m.notice_req, &done, &st);
    if (done) {
      int n = 0;
      MPI_Get_count(&st, MPI_CHAR, &n);
      m.peer_msg = "node " + std::to_string(st.MPI_SOURCE) + " failed: " +
                   std::string(m.notice_buf, static_cast<size_t>(std::max(n, 0)));
    }
  }
  return m.peer_msg;
}

void NodeLink::notify_failure(const std::string& msg) noexcept {
  if (g_agreed.load()) return;  // every node knows already
  g_failed.store(true);
  if (!impl_ || impl_->notified) return;
  impl_->notified = true;
  try {
    const std::string text = msg.substr(0, kNoticeBytes);
    for (int k = 0; k < nodes_; ++k) {
      if (k == node_) continue;
      MPI_Request r = MPI_REQUEST_NULL;
      // Small enough to go eagerly: the request completes without the peer.
      if (MPI_Isend(text.data(), static_cast<int>(text.size()), MPI_CHAR, k, kNoticeTag, impl_->notice, &r) ==
          MPI_SUCCESS)
        MPI_Request_free(&r);
    }
  } catch (...) {
  }
}

namespace {

// Waits for `req`: spins, then yields, then sleeps, testing it, the peers'
// failure notices, `check` and the timeout in between.
void wait_req(NodeLink& l, NodeLink::Impl& m, MPI_Request& req, const NodeLinkOptions& o, const char* what) {
  const int64_t t0 = monotonic_ns();
  const int64_t limit = static_cast<int64_t>(o.timeout.count()) * 1'000'000;
  for (uint32_t i = 0;; ++i) {
    int done = 0;
    const int rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
      throw BackendError("node " + std::to_string(l.node()) + " (" + l.host() + "): MPI call failed in " + what +
                         ": " + mpi_error(rc));
    if (done) return;
    if ((i & 31) == 0) {
      if (std::string peer = l.peer_failure(); !peer.empty())
        throw BackendError("node " + std::to_string(l.node()) + ": " + what + " abandoned: " + peer);
      if (o.check) o.check();
      const int64_t t = monotonic_ns() - t0;
      if (t > limit)
        throw BackendError("node " + std::to_string(l.node()) + " (" + l.host() + "): " + what + " timed out after " +
                           std::to_string(o.timeout.count()) +
                           " ms waiting for the other nodes (one is slow, hung, or making different calls)");
      // MPI's non-blocking collectives advance only inside MPI calls, so
      // keep testing (yielding the core to others now and then) and sleep
      // only once the wait is long (a node far behind).
      if (t > 100'000'000) {
        const timespec ts{0, 100'000};
        ::nanosleep(&ts, nullptr);
      } else if (t > o.spin_ns) {
        ::sched_yield();
      }
    } else {
      cpu_relax();
    }
  }
  (void)m;
}

// Waits as wait_req for a collective just posted on m.comm, numbering it;
// one given up (a failure) is remembered for renew().
void wait_comm(NodeLink& l, NodeLink::Impl& m, MPI_Request& req, const NodeLinkOptions& o, const char* what) {
  const uint64_t seq = m.posted++;
  try {
    wait_req(l, m, req, o, what);
  } catch (...) {
    m.abandoned.push_back({req, seq});
    throw;
  }
}

// Waits as wait_comm; if the wait is given up (a failure), the vectors the
// request still uses (data, counts, displacements: MPI reads the count
// arrays until completion too) move to the link, their memory where it
// was. A collective given up here may still complete later on a retired
// communicator (Runtime::heal across nodes: NodeLink::renew) when the
// peers had posted it, and then reads and writes them.
template <class... V>
void wait_keeping(NodeLink& l, NodeLink::Impl& m, MPI_Request& req, const NodeLinkOptions& o, const char* what,
                  V&... keep) {
  try {
    wait_comm(l, m, req, o, what);
  } catch (...) {
    (m.kept.push_back(std::make_shared<V>(std::move(keep))), ...);
    throw;
  }
}

constexpr uint64_t kRenewMagic = 0x6c616568'6b6e7973ull;  // "synkheal"

std::vector<int> displs_of(std::span<const size_t> counts, const char* what) {
  std::vector<int> d(counts.size());
  size_t off = 0;
  for (size_t k = 0; k < counts.size(); ++k) {
    d[k] = to_int(off, what);
    off += counts[k];
  }
  to_int(off, what);
  return d;
}

std::vector<int> ints_of(std::span<const size_t> counts, const char* what) {
  std::vector<int> c(counts.size());
  for (size_t k = 0; k < counts.size(); ++k) c[k] = to_int(counts[k], what);
  return c;
}

void check_rc(const NodeLink& l, int rc, const char* call, const char* what) {
  if (rc != MPI_SUCCESS)
    throw BackendError("node " + std::to_string(l.node()) + " (" + l.host() + "): " + call + " failed in " + what +
                       ": " + mpi_error(rc));
}

}  // namespace

void NodeLink::all_reduce(void* buf, size_t count, ElemType t, ReduceOp op, const char* what) {
  if (nodes_ == 1 || count == 0) return;
  Impl& m = *impl_;
  MPI_Request r = MPI_REQUEST_NULL;
  const MPI_Datatype dt = mpi_type(t);
  const MPI_Op mop = mpi_op(op);
  const size_t esz = elem_size(t);
  if (nodes_ == 2 || count < static_cast<size_t>(nodes_)) {
    // Two nodes: a op b and b op a are the same bits (the ops commute).
    check_rc(*this, MPI_Iallreduce(MPI_IN_PLACE, buf, to_int(count, what), dt, mop, m.comm, &r), "MPI_Iallreduce",
             what);
    wait_comm(*this, m, r, opts_, what);
    return;
  }
  // More nodes: each block is reduced on one node and then copied to the
  // others, so every node gets the same bits whatever the order MPI adds in.
  std::vector<size_t> counts(static_cast<size_t>(nodes_));
  for (int k = 0; k < nodes_; ++k)
    counts[static_cast<size_t>(k)] = count / static_cast<size_t>(nodes_) + (static_cast<size_t>(k) < count % static_cast<size_t>(nodes_) ? 1 : 0);
  std::vector<int> c = ints_of(counts, what), d = displs_of(counts, what);
  m.tmp.assign(static_cast<const uint8_t*>(buf), static_cast<const uint8_t*>(buf) + count * esz);
  uint8_t* mine = static_cast<uint8_t*>(buf) + static_cast<size_t>(d[static_cast<size_t>(node_)]) * esz;
  check_rc(*this, MPI_Ireduce_scatter(m.tmp.data(), mine, c.data(), dt, mop, m.comm, &r), "MPI_Ireduce_scatter", what);
  wait_keeping(*this, m, r, opts_, what, c, d, m.tmp);
  check_rc(*this, MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, c.data(), d.data(), dt, m.comm, &r),
           "MPI_Iallgatherv", what);
  wait_keeping(*this, m, r, opts_, what, c, d);
}

void NodeLink::broadcast(void* buf, size_t bytes, int root, const char* what) {
  if (nodes_ == 1 || bytes == 0) return;
  Impl& m = *impl_;
  MPI_Request r = MPI_REQUEST_NULL;
  check_rc(*this, MPI_Ibcast(buf, to_int(bytes, what), MPI_BYTE, root, m.comm, &r), "MPI_Ibcast", what);
  wait_comm(*this, m, r, opts_, what);
}

void NodeLink::all_gatherv(void* buf, std::span<const size_t> counts, ElemType t, const char* what) {
  if (nodes_ == 1) return;
  Impl& m = *impl_;
  std::vector<int> c = ints_of(counts, what), d = displs_of(counts, what);
  MPI_Request r = MPI_REQUEST_NULL;
  check_rc(*this, MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, c.data(), d.data(), mpi_type(t), m.comm, &r),
           "MPI_Iallgatherv", what);
  wait_keeping(*this, m, r, opts_, what, c, d);
}

void NodeLink::gatherv(const void* mine, void* all, std::span<const size_t> counts, ElemType t, int root,
                       const char* what) {
  Impl& m = *impl_;
  std::vector<int> c = ints_of(counts, what), d = displs_of(counts, what);
  const size_t esz = elem_size(t);
  const MPI_Datatype dt = mpi_type(t);
  const void* send = mine;
  if (node_ == root) {
    uint8_t* at = static_cast<uint8_t*>(all) + static_cast<size_t>(d[static_cast<size_t>(root)]) * esz;
    if (mine != at && counts[static_cast<size_t>(root)]) std::memmove(at, mine, counts[static_cast<size_t>(root)] * esz);
    send = MPI_IN_PLACE;
  }
  if (nodes_ == 1) return;
  MPI_Request r = MPI_REQUEST_NULL;
  check_rc(*this,
           MPI_Igatherv(send, c[static_cast<size_t>(node_)], dt, all, c.data(), d.data(), dt, root, m.comm, &r),
           "MPI_Igatherv", what);
  wait_keeping(*this, m, r, opts_, what, c, d);
}

void NodeLink::scatterv(const void* all, void* mine, std::span<const size_t> counts, ElemType t, int root,
                        const char* what) {
  Impl& m = *impl_;
  std::vector<int> c = ints_of(counts, what), d = displs_of(counts, what);
  const size_t esz = elem_size(t);
  const MPI_Datatype dt = mpi_type(t);
  void* recv = mine;
  if (node_ == root) {
    const uint8_t* at = static_cast<const uint8_t*>(all) + static_cast<size_t>(d[static_cast<size_t>(root)]) * esz;
    if (mine != at && counts[static_cast<size_t>(root)]) std::memmove(mine, at, counts[static_cast<size_t>(root)] * esz);
    recv = MPI_IN_PLACE;
  }
  if (nodes_ == 1) return;
  MPI_Request r = MPI_REQUEST_NULL;
  check_rc(*this,
           MPI_Iscatterv(all, c.data(), d.data(), dt, recv, c[static_cast<size_t>(node_)], dt, root, m.comm, &r),
           "MPI_Iscatterv", what);
  wait_keeping(*this, m, r, opts_, what, c, d);
}

std::vector<uint8_t> NodeLink::all_gather_bytes(std::span<const uint8_t> mine, std::vector<size_t>* sizes,
                                                const char* what) {
  Impl& m = *impl_;
  std::vector<uint64_t> n(static_cast<size_t>(nodes_));
  n[static_cast<size_t>(node_)] = mine.size();
  if (nodes_ > 1) {
    MPI_Request r = MPI_REQUEST_NULL;
    check_rc(*this, MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, n.data(), 1, MPI_UINT64_T, m.comm, &r),
             "MPI_Iallgather", what);
    wait_keeping(*this, m, r, opts_, what, n);
  }
  std::vector<size_t> counts(n.begin(), n.end());
  size_t total = 0;
  for (size_t x : counts) total += x;
  std::vector<uint8_t> all(total);
  size_t off = 0;
  for (int k = 0; k < node_; ++k) off += counts[static_cast<size_t>(k)];
  if (!mine.empty()) std::memcpy(all.data() + off, mine.data(), mine.size());
  if (nodes_ > 1) {
    std::vector<int> c = ints_of(counts, what), d = displs_of(counts, what);
    MPI_Request r = MPI_REQUEST_NULL;
    check_rc(*this,
             MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all.data(), c.data(), d.data(), MPI_BYTE, m.comm, &r),
             "MPI_Iallgatherv", what);
    wait_keeping(*this, m, r, opts_, what, all, c, d);
  }
  if (sizes) *sizes = std::move(counts);
  return all;
}

void NodeLink::renew(const char* what) {
  Impl& m = *impl_;
  if (m.renew_failed)
    throw BackendError("node " + std::to_string(node_) + " (" + host_ + "): " + what +
                       ": an earlier renewal of the link between nodes timed out, so the nodes' links no longer "
                       "match; end the job and start it again from a checkpoint");
  // A pending receive can be cancelled (a collective cannot): the notices
  // of the failure being healed are not read again.
  if (m.notice_req != MPI_REQUEST_NULL) {
    MPI_Cancel(&m.notice_req);
    MPI_Wait(&m.notice_req, MPI_STATUS_IGNORE);
  }
  m.retired.push_back(m.comm);
  m.retired.push_back(m.notice);
  m.comm = m.notice = MPI_COMM_NULL;
  const uint64_t old_posted = m.posted;
  std::vector<Impl::Abandoned> abandoned = std::move(m.abandoned);
  m.abandoned.clear();
  m.posted = 0;
  m.peer_msg.clear();
  m.notified = false;
  // The runtime is failed while it heals: its check would throw.
  NodeLinkOptions o = opts_;
  o.check = {};
  for (MPI_Comm* c : {&m.comm, &m.notice}) {
    MPI_Request r = MPI_REQUEST_NULL;
    check_rc(*this, MPI_Comm_idup(MPI_COMM_WORLD, c, &r), "MPI_Comm_idup", what);
    try {
      wait_req(*this, m, r, o, what);
    } catch (...) {
      m.renew_failed = true;
      throw;
    }
    MPI_Comm_set_errhandler(*c, MPI_ERRORS_RETURN);
  }
  MPI_Irecv(m.notice_buf, static_cast<int>(kNoticeBytes), MPI_CHAR, MPI_ANY_SOURCE, kNoticeTag, m.notice,
            &m.notice_req);
  ++generation_;
  // Every node at the same generation, all of them renewing; and how many
  // collectives each had posted on the old communicator.
  std::vector<uint64_t> mine{kRenewMagic, generation_, old_posted};
  std::vector<uint64_t> all(3 * static_cast<size_t>(nodes_));
  MPI_Request r = MPI_REQUEST_NULL;
  check_rc(*this, MPI_Iallgather(mine.data(), 3, MPI_UINT64_T, all.data(), 3, MPI_UINT64_T, m.comm, &r),
           "MPI_Iallgather", what);
  wait_keeping(*this, m, r, o, what, mine, all);
  uint64_t everywhere = old_posted;  // collectives 0 .. everywhere-1 were posted on every node
  for (int k = 0; k < nodes_; ++k) {
    const uint64_t magic = all[3 * static_cast<size_t>(k)], gen = all[3 * static_cast<size_t>(k) + 1];
    everywhere = std::min(everywhere, all[3 * static_cast<size_t>(k) + 2]);
    if (magic != kRenewMagic || gen != generation_)
      throw BackendError("node " + std::to_string(node_) + " (" + host_ + "): " + what + ": node " +
                         std::to_string(k) +
                         (magic != kRenewMagic ? " is not renewing the link between nodes"
                                               : " is at link generation " + std::to_string(gen) + ", this node at " +
                                                     std::to_string(generation_)) +
                         " (every node must call heal() after the same failure)");
  }
  // A collective that every node posted completes once every node drives
  // MPI, and until then MPI may write into the buffers of its caller, who
  // gave up on it (they may be gone, or hold the next step's data). So
  // this node's given-up ones are finished now, while every node is here.
  // One that some node never posted cannot complete as a whole, but its
  // request here may (a broadcast whose root reached this node): tested
  // once more, and counted in stranded() while it is still pending.
  for (Impl::Abandoned& a : abandoned) {
    if (a.seq < everywhere) {
      try {
        wait_req(*this, m, a.req, o, what);
      } catch (...) {
        m.renew_failed = true;
        throw;
      }
    } else {
      int done = 0;
      MPI_Test(&a.req, &done, MPI_STATUS_IGNORE);
      if (!done) ++stranded_;
    }
  }
  // Nothing of the new generation is pending anywhere: MPI may end
  // normally again at exit (note_mpi_failure set it aside), and a later
  // failure is one to tell the other nodes about again, as after join().
  g_failed.store(false);
  g_agreed.store(false);
}

size_t NodeLink::abandoned() const noexcept { return impl_->abandoned.size(); }

#else  // no MPI

bool mpi_available() noexcept { return false; }

struct NodeLink::Impl {};

std::unique_ptr<NodeLink> NodeLink::join(const NodeLinkOptions&) {
  throw ArgumentError(
      "synk::fork: more than one node was asked for, but synk was built without MPI (install libopenmpi-dev and "
      "rebuild; cmake says \"synk: MPI (multi-node) ON\")");
}
NodeLink::~NodeLink() = default;
std::string NodeLink::peer_failure() { return {}; }
void NodeLink::renew(const char*) {}
size_t NodeLink::abandoned() const noexcept { return 0; }
void NodeLink::notify_failure(const std::string&) noexcept {
  if (!g_agreed.load()) g_failed.store(true);
}
void NodeLink::all_reduce(void*, size_t, ElemType, ReduceOp, const char*) {}
void NodeLink::broadcast(void*, size_t, int, const char*) {}
void NodeLink::all_gatherv(void*, std::span<const size_t>, ElemType, const char*) {}
void NodeLink::gatherv(const void*, void*, std::span<const size_t>, ElemType, int, const char*) {}
void NodeLink::scatterv(const void*, void*, std::span<const size_t>, ElemType, int, const char*) {}
std::vector<uint8_t> NodeLink::all_gather_bytes(std::span<const uint8_t> mine, std::vector<size_t>*, const char*) {
  return {mine.begin(), mine.end()};
}

#endif

}  // namespace synk::comm
