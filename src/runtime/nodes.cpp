// src/runtime/nodes.cpp — the runtime across nodes (docs/multinode.md): the
// decision to join, the join itself (every node's rank count, the options
// every node must share), agreement checks that turn "nodes making
// different calls" into an error instead of a hang, and the exchange of
// call results between node masters.
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include "runtime/core.hpp"
#include "runtime/nodes.hpp"

namespace synk::detail {

namespace {

// Which GPUs of its machine a process sees: a hash of CUDA_VISIBLE_DEVICES,
// 0 when it is unset (every GPU).
uint64_t visible_devices_hash() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  if (!v) return 0;
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (const char* p = v; *p; ++p) h = (h ^ static_cast<unsigned char>(*p)) * 1099511628211ull;
  return h | 1;  // never 0, also for ""
}

// Node j's part of an all_gather_bytes answer, after checking that it lies
// inside the bytes received.
size_t node_bytes(const std::vector<uint8_t>& all, const std::vector<size_t>& sizes, size_t off, int j) {
  if (static_cast<size_t>(j) >= sizes.size() || off > all.size() || sizes[static_cast<size_t>(j)] > all.size() - off)
    throw FormatError("synk runtime: the bytes of node " + std::to_string(j) + " lie outside those received");
  return sizes[static_cast<size_t>(j)];
}

void copy_text(char* dst, size_t cap, const std::string& s) {
  const size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

}  // namespace

bool want_nodes(const RuntimeOptions& o) {
  switch (o.multi_node) {
    case MultiNode::off: return false;
    case MultiNode::mpi:
      if (!comm::mpi_available())
        throw ArgumentError("synk::fork: multi_node = mpi, but synk was built without MPI (install libopenmpi-dev "
                            "and rebuild; cmake then says \"synk: MPI (multi-node) ON\")");
      return true;
    case MultiNode::automatic: break;
  }
  if (static_cast<uint8_t>(o.multi_node) > static_cast<uint8_t>(MultiNode::mpi))
    throw ArgumentError("synk::fork: multi_node " + std::to_string(static_cast<int>(o.multi_node)) +
                        " is not a synk::MultiNode (automatic, off, mpi)");
  const comm::Launch l = comm::detect_launch();
  if (l.processes <= 1) return false;
  if (!comm::mpi_available())
    throw ArgumentError("synk::fork: this process is one of " + std::to_string(l.processes) + " started by a launcher (" +
                        l.how + "), but synk was built without MPI and cannot join them; rebuild with MPI "
                        "(libopenmpi-dev), or set RuntimeOptions::multi_node = MultiNode::off to run every process "
                        "as a node alone");
  return true;
}

void join_nodes(RuntimeCore& c, int n) {
  c.link = comm::NodeLink::join({.timeout = c.opts.collective_timeout, .spin_ns = c.spin_ns, .check = {}});
  comm::NodeLink& link = *c.link;
  link.set_check([&c] {
    if (c.failed.load()) {
      c.notify_nodes();
      c.throw_failure("the exchange with the other nodes");
    }
  });
  ForkStamp me;
  me.ranks = n;
  me.device = c.device;
  me.comm = static_cast<uint8_t>(c.opts.comm);
  me.gpus = c.gpus;
  me.host = link.host_leader();
  me.devices = visible_devices_hash();
  me.deterministic = c.opts.deterministic;
  me.seed = c.opts.seed;
  me.chunks = c.opts.deterministic ? c.opts.deterministic_chunks : 0;
  char exe[PATH_MAX] = {};
  const ssize_t k = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  std::string path = k > 0 ? std::string(exe, static_cast<size_t>(k)) : "?";
  struct stat st{};
  if (k > 0 && ::stat(path.c_str(), &st) == 0) me.exe_size = static_cast<uint64_t>(st.st_size);
  copy_text(me.exe, sizeof me.exe, path.substr(path.find_last_of('/') + 1));
  uint8_t mine[kForkStampBytes];
  encode_fork_stamp(me, mine);
  std::vector<size_t> sizes;
  const std::vector<uint8_t> all = link.all_gather_bytes(mine, &sizes, "fork");
  const int nodes = link.nodes();
  if (nodes > kMaxNodes)
    throw ArgumentError("synk::fork: " + std::to_string(nodes) + " nodes, but this build serves at most " +
                        std::to_string(kMaxNodes));
  c.node = link.node();
  c.nodes = nodes;
  c.node_sizes.assign(static_cast<size_t>(nodes), 0);
  int64_t world = 0;
  std::vector<NodeGpus> gpus(static_cast<size_t>(nodes));
  size_t off = 0;
  for (int j = 0; j < nodes; ++j) {
    const ForkStamp o = decode_fork_stamp(all.data() + off, node_bytes(all, sizes, off, j), j);
    off += sizes[static_cast<size_t>(j)];
    gpus[static_cast<size_t>(j)] = {.ranks = o.ranks, .gpus = o.gpus, .host = o.host, .devices = o.devices};
    if (!o.same(me))
      throw ArgumentError("synk::fork: the nodes of this job differ: node " + std::to_string(c.node) + " runs " +
                          me.describe() + ", node " + std::to_string(j) + " runs " + o.describe() +
                          "; every node must run the same program with the same options");
    c.node_sizes[static_cast<size_t>(j)] = o.ranks;
    if (j < c.node) c.base += o.ranks;
    world += o.ranks;
  }
  if (world > INT_MAX / 2) throw ArgumentError("synk::fork: " + std::to_string(world) + " ranks in total are too many");
  c.world = static_cast<int>(world);
  c.place = host_place(gpus, c.node);
  if (c.device == Device::cuda) {
    const NodesGpuPlan plan = plan_node_gpus(gpus, c.node, c.opts.comm);
    c.comm_kind = plan.comm;
    c.gpu_first = plan.gpu_first;
  }
  c.cb->gpu_first = c.gpu_first;
  c.cb->node = c.node;
  c.cb->nodes = nodes;
  for (int j = 0; j < nodes; ++j) c.cb->node_sizes[j] = c.node_sizes[static_cast<size_t>(j)];
}

HostPlace host_place(std::span<const NodeGpus> nodes, int node) {
  HostPlace p;
  for (size_t j = 0; j < nodes.size(); ++j) {
    if (nodes[j].host != nodes[static_cast<size_t>(node)].host) continue;
    p.ranks += nodes[j].ranks;
    if (static_cast<int>(j) < node) p.first += nodes[j].ranks;
  }
  return p;
}

int RuntimeCore::node_of(int rank) const {
  int k = 0;
  for (int b = 0; k + 1 < nodes && b + node_sizes[static_cast<size_t>(k)] <= rank; ++k) b += node_sizes[static_cast<size_t>(k)];
  return k;
}

int RuntimeCore::node_base(int k) const {
  int b = 0;
  for (int j = 0; j < k; ++j) b += node_sizes[static_cast<size_t>(j)];
  return b;
}

void RuntimeCore::notify_nodes() noexcept {
  if (!link) return;
  std::string msg;
  {
    std::lock_guard<std::mutex> lk(fail_mu);
    msg = fail_msg;
  }
  link->notify_failure(msg.empty() ? "the runtime failed" : msg);
}

void RuntimeCore::agree(const char* kind, uint64_t a, uint64_t b, const std::string& text) {
  if (!multi()) return;
  CallStamp me;
  copy_text(me.kind, sizeof me.kind, kind);
  me.a = a;
  me.b = b;
  copy_text(me.text, sizeof me.text, text);
  uint8_t mine[kCallStampBytes];
  encode_call_stamp(me, mine);
  std::vector<size_t> sizes;
  const std::vector<uint8_t> all =
      over_link(text, [&] { return link->all_gather_bytes(mine, &sizes, "the call check between nodes"); });
  size_t off = 0;
  for (int j = 0; j < nodes; ++j) {
    const CallStamp o = decode_call_stamp(all.data() + off, node_bytes(all, sizes, off, j), j);
    off += sizes[static_cast<size_t>(j)];
    if (o.same(me)) continue;
    const std::string msg = "the nodes make different calls: node " + std::to_string(node) + " makes " +
                            me.describe() + ", node " + std::to_string(j) + " makes " + o.describe() +
                            " (every node must make the same calls in the same order)";
    // Every node compared the same stamps, so every node refuses this same
    // call, and the exchange completed on all of them: no notice is needed
    // and MPI can still end normally, so a program that catches this, closes
    // and returns 0 ends the job with status 0.
    comm::note_agreed_failure();
    fail(msg, -1);
    throw ArgumentError("synk runtime: " + msg +
                        "; the runtime is now failed on every node and a runtime of several nodes cannot be forked "
                        "again: close() it, end the job, fix the program and start it again (from a checkpoint: "
                        "save_checkpoint still works on the failed runtime)");
  }
}

std::vector<ResultView> exchange_results(RuntimeCore& c, const std::vector<ResultView>& mine,
                                         std::vector<uint8_t>& storage, const std::string& what) {
  const std::vector<uint8_t> blob = encode_node_results(mine);
  std::vector<size_t> sizes;
  storage = c.over_link(what, [&] { return c.link->all_gather_bytes(blob, &sizes, "the exchange of results"); });
  std::vector<ResultView> all;
  size_t off = 0;
  for (int j = 0; j < c.nodes; ++j) {
    const size_t nb = node_bytes(storage, sizes, off, j);
    decode_node_results(storage.data() + off, nb, j, c.node_sizes[static_cast<size_t>(j)], all);
    off += nb;
  }
  return all;
}

}  // namespace synk::detail

namespace synk {
int launched_processes() { return comm::detect_launch().processes; }
}  // namespace synk
