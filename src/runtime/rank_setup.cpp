// src/runtime/rank_setup.cpp — what a rank is made of, for the master and
// the workers alike (rank_setup: its device, GPU and comm by one rule), and
// what CUDA ranks need around them (the device record: cuda/context.hpp):
// the GPU plan of several nodes, and comms joined through bootstrap bytes
// (NCCL: chosen at fork(), one communicator joined after the first
// distribute()).
//
// Why after the first distribute: a CUDA rank makes its CUDA context when it
// compiles its functions, and a runtime that never distributes (map jobs
// only) should not pay for NCCL's bootstrap. Why Cmd::comm_init is a
// collective command: a rank that fails to join aborts the CpuGroup, and
// every other rank's NCCL wait polls that abort (CommSpec::cancelled), so a
// failed or killed rank ends everyone's wait at once instead of at NCCL's
// timeout.
#include <climits>
#include <cstring>

#include "runtime/core.hpp"

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
  plan.comm = want_nccl(comm, w, w) ? comm::CommKind::nccl : comm::CommKind::host_staged;
  return plan;
}

RankSetup rank_setup(const RuntimeCore& c, int local_rank) {
  RankSetup s;
  s.local = local_rank;
  s.rank = c.base + local_rank;
  s.ranks = c.world;
  s.device = c.device;
  // CUDA ranks of this node: host-staged ranks may share GPUs.
  s.gpu = c.device == Device::cuda ? rank_gpu(c.gpu_first, local_rank, c.gpus) : -1;
  s.seed = c.opts.seed;
  s.bucket_bytes = c.opts.bucket_bytes;
  s.comm = comm::CommSpec{.kind = c.comm_kind,
                          .group = c.group.get(),
                          .link = local_rank == 0 ? c.link.get() : nullptr,
                          .layout = comm::NodeLayout{.node = c.node, .sizes = c.node_sizes},
                          .rank = s.rank,
                          .ranks = s.ranks,
                          .device = s.gpu,
                          .timeout = c.opts.collective_timeout,
                          // A peer that failed aborted the group (the
                          // master: or the runtime failed): the comm's waits end then.
                          .cancelled = [&c] { return c.comm_cancelled(); }};
  return s;
}

void RuntimeCore::join_comms() {
  const comm::CommKind kind = comm_kind;
  const std::string what = std::string(comm::comm_kind_name(kind)) + " comm initialisation (" + std::to_string(world) + " ranks)";
  // Several nodes: node 0's master makes the bytes and sends them to the others.
  std::vector<uint8_t> boot(comm::bootstrap_bytes(kind));
  if (node == 0) boot = comm::make_bootstrap(kind);
  if (multi() && !boot.empty()) over_link(what, [&] { link->broadcast(boot.data(), boot.size(), 0, "the comm's bootstrap bytes"); });
  std::memcpy(cb->comm_boot, boot.data(), boot.size());
  signal(Cmd::comm_init, true);
  std::string err;
  try {
    rank->join_comm(boot);
  } catch (const std::exception& e) {
    err = e.what();
  }
  // A worker that failed aborted the group; the master's join then failed too.
  if (!err.empty()) fail_collective(what, err);
  wait_workers(what);
}

}  // namespace synk::detail
