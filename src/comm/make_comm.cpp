// src/comm/make_comm.cpp — comm/make_comm.hpp.
#include "comm/make_comm.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "comm/cpu_comm.hpp"
#include "synk/config.hpp"
#include "synk/error.hpp"

#if SYNK_HAVE_CUDA
#include "comm/host_staged.hpp"
#endif
#if SYNK_HAVE_NCCL
#include "comm/nccl.hpp"
#endif

namespace synk::comm {

const char* comm_kind_name(CommKind k) noexcept {
  switch (k) {
    case CommKind::host: return "host";
    case CommKind::host_staged: return "host-staged";
    case CommKind::nccl: return "nccl";
  }
  return "?";
}

size_t bootstrap_bytes(CommKind k) noexcept {
#if SYNK_HAVE_NCCL
  static_assert(sizeof(NcclId) <= kMaxBootstrapBytes);
  if (k == CommKind::nccl) return sizeof(NcclId);
#endif
  (void)k;
  return 0;
}

std::vector<uint8_t> make_bootstrap(CommKind k) {
#if SYNK_HAVE_NCCL
  if (k == CommKind::nccl) {
    const NcclId id = make_nccl_id();
    return {id.bytes, id.bytes + sizeof id.bytes};
  }
#endif
  (void)k;
  return {};
}

std::vector<uint8_t> group_bootstrap(CommKind k, CpuGroup& group) {
  const size_t n = bootstrap_bytes(k);
  if (n == 0) return {};
  // Carried as whole i32 words (the group's smallest type).
  std::vector<uint8_t> b((n + 3) / 4 * 4);
  if (group.rank() == 0) {
    const std::vector<uint8_t> made = make_bootstrap(k);
    std::copy(made.begin(), made.end(), b.begin());
  }
  group.broadcast(b.data(), b.size() / 4, ElemType::i32, 0);
  b.resize(n);
  return b;
}

namespace {
// The host collectives of a rank: the node's shared-memory group, and with
// several nodes the two-level comm over it and the masters' MPI link.
std::unique_ptr<Comm> host_comm(const CommSpec& s) {
  if (!s.group) throw BackendError("rank " + std::to_string(s.rank) + ": a host comm without its group");
  auto local = std::make_unique<CpuComm>(*s.group);
  if (s.layout.sizes.size() <= 1) return local;
  return std::make_unique<NodeComm>(std::move(local), s.link, s.layout);
}
}  // namespace

std::unique_ptr<Comm> make_comm(const CommSpec& s, std::span<const uint8_t> bootstrap) {
  if (bootstrap.size() != bootstrap_bytes(s.kind))
    throw ArgumentError("rank " + std::to_string(s.rank) + ": " + std::to_string(bootstrap.size()) +
                        " bootstrap bytes for a " + comm_kind_name(s.kind) + " comm, which takes " +
                        std::to_string(bootstrap_bytes(s.kind)));
  switch (s.kind) {
    case CommKind::host: return host_comm(s);
    case CommKind::host_staged:
#if SYNK_HAVE_CUDA
      return std::make_unique<HostStagedComm>(host_comm(s), HostStagedOptions{.device = s.device});
#else
      break;
#endif
    case CommKind::nccl: {
#if SYNK_HAVE_NCCL
      // One communicator over every rank of every node (global ranks).
      NcclId id;
      std::memcpy(id.bytes, bootstrap.data(), sizeof id.bytes);
      return std::make_unique<NcclComm>(id, NcclCommOptions{.ranks = s.ranks,
                                                            .rank = s.rank,
                                                            .device = s.device,
                                                            .timeout = s.timeout,
                                                            .cancelled = s.cancelled});
#else
      break;
#endif
    }
  }
  throw BackendError("rank " + std::to_string(s.rank) + ": a " + comm_kind_name(s.kind) +
                     " comm in a build without it (synk was built without " +
                     (s.kind == CommKind::nccl ? "NCCL" : "CUDA") + ")");
}

}  // namespace synk::comm
