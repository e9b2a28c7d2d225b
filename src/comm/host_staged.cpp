// src/comm/host_staged.cpp — HostStagedComm (comm/host_staged.hpp): device
// buffers through a page-locked staging area and the CpuGroup collectives.
//
// The comm is built only with CUDA (host compiler; CUDA headers from
// CUDA::cudart); choose_staging, which needs no CUDA, in every build.
// Piece sizes: all_reduce works in place on the whole staging area; the
// other collectives keep separate input and output regions, sized so one
// piece of every rank fits: `q` elements per rank and piece, the input
// region holding q (or, for scatter on root, n x q) and the output n x q.
#include "synk/config.hpp"

#include "comm/host_staged.hpp"

#include <string>

namespace synk::comm {

Staging choose_staging(int register_status, const char* error_name, int rank, int device, std::atomic<bool>& said,
                       std::FILE* out) {
  if (register_status == 0) return Staging::pinned;
  if (!said.exchange(true) && out) {
    const std::string name =
        error_name && *error_name ? error_name : "CUDA error " + std::to_string(register_status);
    std::fprintf(out,
                 "synk: host-staged comm on rank %d, GPU %d: cudaHostRegister refused the staging area (%s); "
                 "staging through pageable memory instead (correct, slower). Said once per process.\n",
                 rank, device, name.c_str());
    std::fflush(out);
  }
  return Staging::pageable;
}

}  // namespace synk::comm

#if SYNK_HAVE_CUDA

#include "comm/cpu_comm.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cuda/device.hpp"

namespace synk::comm {

namespace {

char* at(void* p, size_t bytes) { return static_cast<char*>(p) + bytes; }
const char* at(const void* p, size_t bytes) { return static_cast<const char*>(p) + bytes; }

}  // namespace

HostStagedComm::HostStagedComm(CpuGroup& group, const HostStagedOptions& opts)
    : HostStagedComm(std::make_unique<CpuComm>(group), opts) {}

HostStagedComm::HostStagedComm(std::unique_ptr<Comm> host, const HostStagedOptions& opts)
    : owned_(std::move(host)), host_(*owned_), opts_(opts) {
  const Comm& group = host_;
  if (group.rank() < 0)
    throw ArgumentError("HostStagedComm: the CpuGroup is not bound to a rank in this process (call bind first)");
  if (opts.device < 0)
    throw ArgumentError("HostStagedComm: device " + std::to_string(opts.device) + " is negative");
  // Every collective needs room for one element of every rank and one of its own, in 8-byte elements.
  const size_t min_bytes = (static_cast<size_t>(group.size()) * 2 + 1) * 8;
  if (opts.staging_bytes < min_bytes)
    throw ArgumentError("HostStagedComm: staging_bytes " + std::to_string(opts.staging_bytes) + " is below " +
                        std::to_string(min_bytes) + " for " + std::to_string(group.size()) + " ranks");
  SYNK_CUDA_CHECK(cudaSetDevice(opts.device));
  // A private memfd mapping: page-aligned and zero-filled; only this process uses it.
  staging_ = SharedSegment::create(opts.staging_bytes, "synk-host-staged");
  try {
    if (opts.pin_staging) {
      // A refusal (some sandboxes allow no page-locking of this memory) is
      // not fatal, as for Data segments (cuda::register_host): pageable
      // staging is correct, only slower.
      static std::atomic<bool> said{false};
      const cudaError_t e = cudaHostRegister(staging_.data(), staging_.size(), cudaHostRegisterDefault);
      if (e != cudaSuccess) (void)cudaGetLastError();  // not sticky: clear it for the calls after
      registered_ = choose_staging(static_cast<int>(e), cudaGetErrorName(e), host_.rank(), opts.device, said,
                                   stderr) == Staging::pinned;
    }
    copy_.emplace();
  } catch (...) {
    if (registered_) (void)cudaHostUnregister(staging_.data());
    (void)cudaGetLastError();
    throw;
  }
}

HostStagedComm::~HostStagedComm() {
  // The copies read or write the staging area: finish them before unmapping it.
  if (copy_) (void)cudaStreamSynchronize(copy_->get());
  if (registered_) (void)cudaHostUnregister(staging_.data());
  (void)cudaGetLastError();
}

void HostStagedComm::begin(const char* coll, StreamHandle stream) {
  (void)coll;
  copy_->wait_for(stream);
}

void HostStagedComm::end(StreamHandle stream) {
  copy_->hand_back(stream);
}

void HostStagedComm::host_ready() { SYNK_CUDA_CHECK(cudaStreamSynchronize(copy_->get())); }

void HostStagedComm::wait() { SYNK_CUDA_CHECK(cudaStreamSynchronize(copy_->get())); }

template <class F> void HostStagedComm::cpu(const char* coll, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    throw BackendError("host-staged " + std::string(coll) + " on rank " + std::to_string(rank()) + " of " +
                       std::to_string(size()) + ", GPU " + std::to_string(opts_.device) + ": " + e.what());
  }
}

void HostStagedComm::d2h(void* host, const void* dev, size_t bytes) {
  if (bytes) SYNK_CUDA_CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, copy_->get()));
}

void HostStagedComm::h2d(void* dev, const void* host, size_t bytes) {
  if (bytes) SYNK_CUDA_CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, copy_->get()));
}

void HostStagedComm::check_root(int root, const char* coll) const {
  if (root < 0 || root >= size())
    throw ArgumentError(std::string("host-staged ") + coll + ": root " + std::to_string(root) +
                        " out of range for " + std::to_string(size()) + " ranks");
}

void HostStagedComm::check_counts(std::span<const size_t> counts, const char* coll) const {
  if (counts.size() != static_cast<size_t>(size()))
    throw ArgumentError(std::string("host-staged ") + coll + ": " + std::to_string(counts.size()) +
                        " counts for " + std::to_string(size()) + " ranks");
}

// ---- collectives ----------------------------------------------------------------------

void HostStagedComm::all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op,
                                StreamHandle stream) {
  begin("all_reduce", stream);
  const size_t es = elem_size(t);
  const size_t piece = staging_.size() / es;
  void* st = staging_.data();
  for (size_t b = 0; b < count; b += piece) {
    const size_t m = std::min(piece, count - b);
    d2h(st, at(in, b * es), m * es);
    host_ready();
    cpu("all_reduce", [&] { host_.all_reduce(st, st, m, t, op, nullptr); });
    h2d(at(out, b * es), st, m * es);
  }
  end(stream);
}

void HostStagedComm::reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root,
                            StreamHandle stream) {
  check_root(root, "reduce");
  begin("reduce", stream);
  const size_t es = elem_size(t);
  const size_t piece = staging_.size() / 2 / es;
  void* sin = staging_.data();
  void* sout = at(staging_.data(), piece * es);
  const bool receives = rank() == root;
  for (size_t b = 0; b < count; b += piece) {
    const size_t m = std::min(piece, count - b);
    d2h(sin, at(in, b * es), m * es);
    host_ready();
    cpu("reduce", [&] { host_.reduce(sin, receives ? sout : nullptr, m, t, op, root, nullptr); });
    if (receives) h2d(at(out, b * es), sout, m * es);
  }
  end(stream);
}

void HostStagedComm::broadcast(void* buf, size_t count, ElemType t, int root, StreamHandle stream) {
  check_root(root, "broadcast");
  begin("broadcast", stream);
  const size_t es = elem_size(t);
  const size_t piece = staging_.size() / es;
  void* st = staging_.data();
  const bool source = rank() == root;
  for (size_t b = 0; b < count; b += piece) {
    const size_t m = std::min(piece, count - b);
    if (source) d2h(st, at(buf, b * es), m * es);
    host_ready();  // also: the previous piece's copy out of st is done
    cpu("broadcast", [&] { host_.broadcast(st, m, t, root, nullptr); });
    if (!source) h2d(at(buf, b * es), st, m * es);
  }
  end(stream);
}

void HostStagedComm::all_gather(const void* in, void* out, size_t count, ElemType t, StreamHandle stream) {
  begin("all_gather", stream);
  const size_t es = elem_size(t);
  const size_t n = static_cast<size_t>(size());
  const size_t piece = staging_.size() / es / (n + 1);
  void* sin = staging_.data();
  void* sout = at(staging_.data(), piece * es);
  for (size_t b = 0; b < count; b += piece) {
    const size_t m = std::min(piece, count - b);
    d2h(sin, at(in, b * es), m * es);
    host_ready();
    cpu("all_gather", [&] { host_.all_gather(sin, sout, m, t, nullptr); });
    // Rank r's piece lands at out + (r * count + b): n rows of m elements,
    // source pitch m, destination pitch count.
    SYNK_CUDA_CHECK(cudaMemcpy2DAsync(at(out, b * es), count * es, sout, m * es, m * es, n,
                                      cudaMemcpyHostToDevice, copy_->get()));
  }
  end(stream);
}

void HostStagedComm::gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                             StreamHandle stream) {
  check_root(root, "gatherv");
  check_counts(counts, "gatherv");
  begin("gatherv", stream);
  const size_t es = elem_size(t);
  const int n = size(), me = rank();
  // Round k moves elements [k q, (k+1) q) of every rank's share.
  const size_t q = staging_.size() / es / (static_cast<size_t>(n) + 1);
  const size_t longest = *std::max_element(counts.begin(), counts.end());
  void* sin = staging_.data();
  void* sout = at(staging_.data(), q * es);
  std::vector<size_t> displ(static_cast<size_t>(n), 0), pieces(static_cast<size_t>(n), 0);
  for (int r = 1; r < n; ++r) displ[r] = displ[r - 1] + counts[r - 1];
  for (size_t b = 0; b < longest; b += q) {
    for (int r = 0; r < n; ++r) pieces[r] = counts[r] > b ? std::min(q, counts[r] - b) : 0;
    d2h(sin, at(in, b * es), pieces[me] * es);
    host_ready();
    cpu("gatherv", [&] { host_.gatherv(sin, me == root ? sout : nullptr, pieces, t, root, nullptr); });
    if (me == root) {
      size_t packed = 0;  // pieces lie back to back in rank order in sout
      for (int r = 0; r < n; ++r) {
        h2d(at(out, (displ[r] + b) * es), at(sout, packed * es), pieces[r] * es);
        packed += pieces[r];
      }
    }
  }
  end(stream);
}

void HostStagedComm::scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                              StreamHandle stream) {
  check_root(root, "scatterv");
  check_counts(counts, "scatterv");
  begin("scatterv", stream);
  const size_t es = elem_size(t);
  const int n = size(), me = rank();
  const size_t q = staging_.size() / es / (static_cast<size_t>(n) + 1);
  const size_t longest = *std::max_element(counts.begin(), counts.end());
  void* sin = staging_.data();                 // root: n x q (pieces back to back)
  void* sout = at(staging_.data(), static_cast<size_t>(n) * q * es);  // q
  std::vector<size_t> displ(static_cast<size_t>(n), 0), pieces(static_cast<size_t>(n), 0);
  for (int r = 1; r < n; ++r) displ[r] = displ[r - 1] + counts[r - 1];
  for (size_t b = 0; b < longest; b += q) {
    for (int r = 0; r < n; ++r) pieces[r] = counts[r] > b ? std::min(q, counts[r] - b) : 0;
    if (me == root) {
      size_t packed = 0;
      for (int r = 0; r < n; ++r) {
        d2h(at(sin, packed * es), at(in, (displ[r] + b) * es), pieces[r] * es);
        packed += pieces[r];
      }
    }
    host_ready();
    cpu("scatterv", [&] { host_.scatterv(me == root ? sin : nullptr, sout, pieces, t, root, nullptr); });
    h2d(at(out, b * es), sout, pieces[me] * es);
  }
  end(stream);
}

void HostStagedComm::gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) {
  const std::vector<size_t> counts(static_cast<size_t>(size()), count);
  gatherv(in, out, counts, t, root, stream);
}

void HostStagedComm::scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) {
  const std::vector<size_t> counts(static_cast<size_t>(size()), count);
  scatterv(in, out, counts, t, root, stream);
}

}  // namespace synk::comm

#endif  // SYNK_HAVE_CUDA
