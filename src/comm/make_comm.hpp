// src/comm/make_comm.hpp — which Comm a rank gets, made in one place for
// every kind of rank (private header).
//
// Some comms are joined through bytes that one rank makes and every other
// rank must receive before it can join (NCCL's unique id); the caller
// carries them however it likes (the runtime: its control block and, across
// nodes, the masters' link) and never needs to know which comm needs them:
//
//   std::vector<uint8_t> boot;  // on rank 0, then carried to every rank
//   if (comm::needs_bootstrap(kind)) boot = comm::make_bootstrap(kind);
//   auto c = comm::make_comm(spec, boot);  // every rank at once
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "comm/comm.hpp"
#include "comm/node_comm.hpp"

namespace synk::comm {

// host: the node's shared-memory group (two-level over the masters' MPI
// link with several nodes); host_staged: device buffers staged through the
// host comm; nccl: one NCCL communicator over every rank of every node.
enum class CommKind : uint8_t { host = 0, host_staged = 1, nccl = 2 };
const char* comm_kind_name(CommKind k) noexcept;

struct CommSpec {
  CommKind kind = CommKind::host;
  CpuGroup* group = nullptr;     // the node's group, bound to this rank (host and host_staged)
  NodeLink* link = nullptr;      // the master's link to the other nodes (null on workers)
  NodeLayout layout;             // sizes.size() > 1: several nodes
  int rank = 0, ranks = 1;       // global
  int device = -1;               // CUDA ordinal (host_staged, nccl)
  std::chrono::milliseconds timeout{0};  // nccl: a collective's limit
  std::function<bool()> cancelled;       // nccl: a peer failed, stop waiting
};

// The bootstrap bytes of a kind: their size (0: joined without any), made
// on one rank (make_bootstrap; BackendError if it fails).
inline constexpr size_t kMaxBootstrapBytes = 128;
size_t bootstrap_bytes(CommKind k) noexcept;
inline bool needs_bootstrap(CommKind k) noexcept { return bootstrap_bytes(k) > 0; }
std::vector<uint8_t> make_bootstrap(CommKind k);

// The bootstrap bytes on every rank of `group` at once, for programs whose
// ranks share only the group (tools, tests; the runtime carries them in its
// control block): its rank 0 makes them, the group carries them. Every
// rank calls it (a group collective); empty for a kind that needs none.
std::vector<uint8_t> group_bootstrap(CommKind k, CpuGroup& group);

// The rank's comm; `bootstrap` holds bootstrap_bytes(spec.kind) bytes made
// by make_bootstrap on one rank. Throws BackendError (a kind this build
// lacks, a failed join) or ArgumentError (bootstrap bytes of a wrong size).
std::unique_ptr<Comm> make_comm(const CommSpec& spec, std::span<const uint8_t> bootstrap = {});

}  // namespace synk::comm
