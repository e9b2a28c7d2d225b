// src/runtime/rank_setup.cpp — what a rank is made of, for the master and
// the workers alike: its executor (one device rule), its comm (one backend
// rule), and what CUDA ranks need around them: each rank's device made
// current before its first CUDA object (cuda/context.hpp), and NCCL (chosen
// at fork(), one communicator joined after the first distribute()).
//
// Why after the first distribute: a CUDA rank makes its CUDA context when it
// compiles its functions, and a runtime that never distributes (map jobs
// only) should not pay for NCCL's bootstrap. Why Cmd::comm_init is a
// collective command: a rank that fails to join aborts the CpuGroup, and
// every other rank's NCCL wait polls that abort (NcclCommOptions::cancelled),
// so a failed or killed rank ends everyone's wait at once instead of at
// NCCL's timeout.
#include <climits>
#include <cstring>

#include "comm/cpu_comm.hpp"
#include "comm/node_comm.hpp"
#include "cuda/context.hpp"
#include "runtime/core.hpp"

#if SYNK_HAVE_CUDA
#include "comm/host_staged.hpp"
#endif
#if SYNK_HAVE_NCCL
#include "comm/nccl.hpp"
#endif

namespace synk::detail {

bool want_nccl(CommBackend comm, int ranks, int gpus) {
  if (comm == CommBackend::host_staged) return false;
  if (comm == CommBackend::nccl && !SYNK_HAVE_NCCL)
    throw ArgumentError("synk::fork: comm = nccl but synk was built without NCCL (use host_staged or automatic)");
  // Asked for, it is used even by one rank (a one-GPU machine can then run
  // the NCCL path); automatic leaves one rank alone, since it has nobody to
  // talk to. Several ranks on one GPU cannot use NCCL (fork() refuses that
  // unless host_staged was asked for).
  if (comm == CommBackend::nccl) return ranks <= gpus;
  return SYNK_HAVE_NCCL && ranks > 1 && ranks <= gpus;
}

int rank_gpu(int gpu_first, int local_rank, int gpus) {
  // Nodes sharing a machine's GPUs count their ranks on from the nodes
  // before them there: with local_rank % gpus alone, two nodes would both
  // put their rank 0 on GPU 0, which NCCL refuses (one device per rank).
  return gpus > 0 ? (gpu_first + local_rank) % gpus : 0;
}

NodesGpuPlan plan_node_gpus(std::span<const NodeGpus> nodes, int node, CommBackend comm) {
  auto shares = [&](size_t a, size_t b) {
    return nodes[a].host == nodes[b].host && nodes[a].devices == nodes[b].devices;
  };
  NodesGpuPlan plan;
  int64_t world = 0;
  for (size_t j = 0; j < nodes.size(); ++j) {
    world += nodes[j].ranks;
    if (static_cast<int>(j) < node && shares(j, static_cast<size_t>(node))) plan.gpu_first += nodes[j].ranks;
  }
  // Every group of nodes sharing GPUs, checked in node order from its
  // first node, so that every node refuses the same group in the same words.
  for (size_t j = 0; j < nodes.size(); ++j) {
    bool first = true;
    for (size_t i = 0; i < j; ++i) first = first && !shares(i, j);
    if (!first) continue;
    int64_t ranks = 0;
    int gpus = nodes[j].gpus;
    std::string who;
    for (size_t i = j; i < nodes.size(); ++i) {
      if (!shares(i, j)) continue;
      ranks += nodes[i].ranks;
      gpus = std::min(gpus, nodes[i].gpus);
      who += (who.empty() ? "" : ", ") + std::to_string(i);
    }
    if (ranks > gpus && comm != CommBackend::host_staged)
      throw ArgumentError("synk::fork: node(s) " + who + " of this job share the " + std::to_string(gpus) +
                          " GPU(s) of one machine but start " + std::to_string(ranks) +
                          " CUDA ranks there together; NCCL needs a GPU per rank: start fewer ranks per node "
                          "(RuntimeOptions::workers), give the nodes different GPUs (CUDA_VISIBLE_DEVICES), or "
                          "use comm = CommBackend::host_staged");
  }
  // One communicator over every rank of every node; the decision is the
  // job's (its rank count), never one node's, so all nodes make the same.
  const int w = static_cast<int>(std::min<int64_t>(world, INT_MAX));
  plan.nccl = want_nccl(comm, w, w);
  return plan;
}

namespace {
// CUDA ranks of this node: host-staged ranks may share GPUs.
int gpu_of(const RuntimeCore& c, int rank) { return rank_gpu(c.gpu_first, rank, c.gpus); }
}  // namespace

std::unique_ptr<exec::Executor> make_rank_executor(const Graph& g, const RuntimeCore& c, int rank) {
  exec::ExecutorOptions o{.seed = c.opts.seed, .rank = rank, .blas_threads = 1};
  if (c.cuda) {
    o.device = exec::Device::cuda;
    o.ordinal = gpu_of(c, rank);
    use_rank_device(rank, o.ordinal);
  }
  return exec::make_executor(g, o);
}

namespace {
// The host collectives of a rank: the node's shared-memory group, and with
// several nodes the two-level comm over it and the masters' MPI link.
std::unique_ptr<comm::Comm> host_comm(const RuntimeCore& c, int rank) {
  auto local = std::make_unique<comm::CpuComm>(*c.group);
  if (!c.multi()) return local;
  return std::make_unique<comm::NodeComm>(std::move(local), rank == 0 ? c.link.get() : nullptr,
                                          comm::NodeLayout{.node = c.node, .sizes = c.node_sizes});
}
}  // namespace

std::unique_ptr<comm::Comm> make_rank_comm(const RuntimeCore& c, int rank, std::function<bool()> cancelled) {
  if (!c.cuda) return host_comm(c, rank);
#if SYNK_HAVE_NCCL
  if (c.nccl) {
    // One communicator over every rank of every node (global ranks).
    comm::NcclId id;
    std::memcpy(id.bytes, c.cb->nccl_id, sizeof id.bytes);
    return std::make_unique<comm::NcclComm>(id, comm::NcclCommOptions{.ranks = c.world,
                                                                       .rank = c.base + rank,
                                                                       .device = gpu_of(c, rank),
                                                                       .timeout = c.opts.collective_timeout,
                                                                       .cancelled = std::move(cancelled)});
  }
#else
  (void)cancelled;
#endif
#if SYNK_HAVE_CUDA
  return std::make_unique<comm::HostStagedComm>(host_comm(c, rank),
                                                comm::HostStagedOptions{.device = gpu_of(c, rank)});
#else
  (void)rank;
  throw BackendError("synk runtime: CUDA ranks in a build without CUDA");
#endif
}

void RuntimeCore::init_nccl() {
  const std::string what = "NCCL initialisation (" + std::to_string(world) + " ranks)";
#if SYNK_HAVE_NCCL
  // Several nodes: node 0's master makes the id and sends it to the others.
  comm::NcclId id{};
  if (node == 0) id = comm::make_nccl_id();
  if (multi()) over_link(what, [&] { link->broadcast(id.bytes, sizeof id.bytes, 0, "the NCCL id"); });
  std::memcpy(cb->nccl_id, id.bytes, sizeof id.bytes);
#endif
  signal(Cmd::comm_init, true);
  std::string err;
  try {
    comm = make_rank_comm(*this, 0, [this] { return comm_cancelled(); });
  } catch (const std::exception& e) {
    err = e.what();
  }
  // A worker that failed aborted the group; the master's join then failed too.
  if (!err.empty()) fail_collective(what, err);
  wait_workers(what);
  local.comm = comm.get();
}

}  // namespace synk::detail
