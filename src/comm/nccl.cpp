// src/comm/nccl.cpp — NcclComm (comm/nccl.hpp): a non-blocking NCCL
// communicator whose every wait is bounded by a watchdog.
//
// Built only with NCCL (SYNK_HAVE_NCCL); host compiler, the CUDA and NCCL
// headers come from the CUDA::cudart and NCCL::NCCL targets.
#include "synk/config.hpp"

#if SYNK_HAVE_NCCL

#include "comm/nccl.hpp"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "cuda/device.hpp"

namespace synk::comm {

static_assert(sizeof(NcclId) == sizeof(ncclUniqueId), "NcclId must hold an ncclUniqueId");

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_live{0};  // NcclComm::live()

ncclDataType_t nccl_type(ElemType t) {
  switch (t) {
    case ElemType::f32: return ncclFloat32;
    case ElemType::i32: return ncclInt32;
    case ElemType::f64: return ncclFloat64;
    case ElemType::i64: return ncclInt64;
  }
  throw ArgumentError("NCCL: unknown element type");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::prod: return ncclProd;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
    case ReduceOp::avg:
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
      // Floats: pre-multiplied sum; integers: sum, then division truncated
      // toward zero (as CpuGroup's avg).
      return ncclAvg;
#else
      throw BackendError("NCCL: redop avg needs NCCL >= 2.10 (this build has " + std::to_string(NCCL_VERSION_CODE) + ")");
#endif
  }
  throw ArgumentError("NCCL: unknown reduction");
}

// Between polls: spin briefly (a small collective finishes in microseconds),
// then yield, then sleep so a long wait does not burn a core.
void backoff(Clock::time_point start) {
  const auto waited = Clock::now() - start;
  if (waited < std::chrono::microseconds(50)) return;
  if (waited < std::chrono::milliseconds(2)) {
    std::this_thread::yield();
    return;
  }
  std::this_thread::sleep_for(std::chrono::microseconds(100));
}

const void* offset(const void* p, size_t elems, ElemType t) {
  return static_cast<const char*>(p) + elems * elem_size(t);
}
void* offset(void* p, size_t elems, ElemType t) { return static_cast<char*>(p) + elems * elem_size(t); }

}  // namespace

// Inside NcclComm members: an NCCL call on this communicator, checked and,
// when ncclInProgress, waited out by the watchdog.
#define SYNK_NCCL_COMM_CALL(call) finish(static_cast<int>(call), #call, __FILE__, __LINE__)

void throw_nccl_error(int result, const char* call, const char* file, int line, int rank, const char* detail) {
  const int dev = cuda::current_device();
  std::string msg = "NCCL call failed: ";
  msg += call;
  msg += " at ";
  msg += file;
  msg += ":" + std::to_string(line);
  msg += rank >= 0 ? " on rank " + std::to_string(rank) : std::string(" outside a communicator");
  msg += ", GPU " + (dev >= 0 ? std::to_string(dev) : std::string("?"));
  msg += ": ";
  msg += ncclGetErrorString(static_cast<ncclResult_t>(result));
  if (detail && *detail) {
    msg += " (";
    msg += detail;
    msg += ")";
  }
  throw BackendError(msg);
}

NcclId make_nccl_id() {
  ncclUniqueId uid;
  SYNK_NCCL_CHECK(ncclGetUniqueId(&uid));
  NcclId id;
  std::memcpy(id.bytes, uid.internal, sizeof id.bytes);
  return id;
}

int nccl_version() noexcept {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return 0;
  return v;
}

bool use_native_gather_scatter(int library_version, bool symbols_found) noexcept {
  // NCCL_VERSION(2, 28, 0), written out: the threshold is the library's,
  // whatever the headers at hand say. Versions before 2.9 were coded
  // major * 1000 + minor * 100 + patch (2.8.4: 2804), below it too.
  constexpr int kFirstWithGatherScatter = 22800;
  return library_version >= kFirstWithGatherScatter && symbols_found;
}

namespace {

// ncclGather and ncclScatter have this signature (nccl.h of 2.28); declared
// here so that nothing in libsynk refers to the symbols themselves.
using RootCollective = ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
struct NativeRootCollectives {
  RootCollective gather = nullptr, scatter = nullptr;
};

// Looked up once, in the libnccl that answered ncclGetVersion (the one this
// process runs), else in the global scope (NCCL linked statically).
const NativeRootCollectives& native_root_collectives() noexcept {
  static const NativeRootCollectives found = [] {
    NativeRootCollectives r;
    const int version = nccl_version();
    if (!use_native_gather_scatter(version, true)) return r;  // too old: not even looked for
    void* lib = nullptr;
    Dl_info info{};
    if (::dladdr(reinterpret_cast<void*>(&ncclGetVersion), &info) != 0 && info.dli_fname)
      lib = ::dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);  // already loaded: a handle, nothing new
    void* scope = lib ? lib : RTLD_DEFAULT;
    void* g = ::dlsym(scope, "ncclGather");
    void* s = ::dlsym(scope, "ncclScatter");
    if (use_native_gather_scatter(version, g && s)) {
      r.gather = reinterpret_cast<RootCollective>(g);
      r.scatter = reinterpret_cast<RootCollective>(s);
    }
    if (lib) ::dlclose(lib);  // drops the reference dlopen took; the library stays (the process links it)
    return r;
  }();
  return found;
}

}  // namespace

bool native_gather_scatter() noexcept { return native_root_collectives().gather != nullptr; }

NcclComm::NcclComm(const NcclId& id, const NcclCommOptions& opts) : opts_(opts) {
  if (opts.ranks < 1 || opts.rank < 0 || opts.rank >= opts.ranks)
    throw ArgumentError("NcclComm: rank " + std::to_string(opts.rank) + " out of range for " +
                        std::to_string(opts.ranks) + " ranks");
  if (opts.device < 0)
    throw ArgumentError("NcclComm: device " + std::to_string(opts.device) + " is negative");
  // The device stays current for this process: a rank drives one GPU, and
  // NCCL binds the communicator to the device current at init.
  SYNK_CUDA_CHECK(cudaSetDevice(opts.device));
  side_.emplace();
  try {
    ncclUniqueId uid;
    std::memcpy(uid.internal, id.bytes, sizeof uid.internal);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t c = nullptr;
    const ncclResult_t r = ncclCommInitRankConfig(&c, opts.ranks, uid, opts.rank, &config);
    comm_ = c;  // may be set even when r is an error; fail() aborts it then
    if (r != ncclSuccess && r != ncclInProgress) {
      if (!comm_) throw_nccl_error(r, "ncclCommInitRankConfig", __FILE__, __LINE__, opts.rank);
      fail("ncclCommInitRankConfig", r);
    }
    settle("ncclCommInitRankConfig", __FILE__, __LINE__);
    g_live.fetch_add(1);
    counted_ = true;
  } catch (...) {
    if (comm_ && !aborted_) (void)ncclCommAbort(comm_);
    comm_ = nullptr;
    throw;
  }
}

int NcclComm::live() noexcept { return g_live.load(); }

NcclComm::~NcclComm() {
  if (counted_) g_live.fetch_sub(1);
  if (comm_ && !aborted_) {
    try {
      wait();  // bounded; aborts on error or timeout
      if (comm_) {
        const ncclResult_t r = ncclCommFinalize(comm_);
        if (r != ncclSuccess && r != ncclInProgress) throw BackendError("ncclCommFinalize failed");
        coll_ = "finalize";
        settle("ncclCommFinalize", __FILE__, __LINE__);
        (void)ncclCommDestroy(comm_);
        comm_ = nullptr;
      }
    } catch (...) {
      // wait()/settle() already aborted on their failures; a bare failure here did not.
    }
  }
  if (comm_) abort("destroyed after a failure");
  (void)cudaGetLastError();
}

void NcclComm::abort(const std::string& reason) noexcept {
  if (!aborted_) {
    aborted_ = true;
    try {
      abort_reason_ = reason;
    } catch (...) {
    }
  }
  if (comm_) {
    // Makes NCCL's kernels return, so the streams drain; frees the communicator.
    (void)ncclCommAbort(comm_);
    comm_ = nullptr;
  }
}

void NcclComm::fail(const std::string& what, int result) {
  const char* last = comm_ ? ncclGetLastError(comm_) : nullptr;
  std::string msg = "NCCL " + what + " failed on rank " + std::to_string(opts_.rank) + " of " +
                    std::to_string(opts_.ranks) + ", GPU " + std::to_string(opts_.device) + ", in " + coll_ +
                    " (collective #" + std::to_string(calls_) + ")";
  if (result != 0) {
    msg += ": ";
    msg += ncclGetErrorString(static_cast<ncclResult_t>(result));
  }
  if (last && *last) {
    msg += " (";
    msg += last;
    msg += ")";
  }
  msg += "; communicator aborted";
  abort(msg);
  throw BackendError(msg);
}

void NcclComm::settle(const char* call, const char* file, int line) {
  const auto start = Clock::now();
  const auto deadline = start + opts_.timeout;
  for (;;) {
    ncclResult_t st = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &st);
    if (r != ncclSuccess) fail(std::string("ncclCommGetAsyncError after ") + call, r);
    if (st == ncclSuccess) return;
    if (st != ncclInProgress)
      fail(std::string(call) + " at " + file + ":" + std::to_string(line), st);
    if (opts_.cancelled && opts_.cancelled())
      fail(std::string(call) + " at " + file + ":" + std::to_string(line) + " cancelled: a peer failed", 0);
    if (Clock::now() > deadline)
      fail(std::string(call) + " at " + file + ":" + std::to_string(line) + " timed out after " +
               std::to_string(opts_.timeout.count()) + " ms (a peer did not join or progress)",
           0);
    backoff(start);
  }
}

void NcclComm::finish(int result, const char* call, const char* file, int line) {
  if (result == ncclSuccess) return;
  if (result == ncclInProgress) {
    settle(call, file, line);
    return;
  }
  fail(std::string(call) + " at " + file + ":" + std::to_string(line), result);
}

void NcclComm::check_usable(const char* coll) const {
  if (aborted_ || !comm_)
    throw BackendError("NCCL " + std::string(coll) + " on rank " + std::to_string(opts_.rank) + ", GPU " +
                       std::to_string(opts_.device) + ": the communicator was aborted earlier (" + abort_reason_ +
                       ")");
}

void NcclComm::check_root(int root, const char* coll) const {
  if (root < 0 || root >= opts_.ranks)
    throw ArgumentError(std::string("NCCL ") + coll + ": root " + std::to_string(root) + " out of range for " +
                        std::to_string(opts_.ranks) + " ranks");
}

void NcclComm::check_counts(std::span<const size_t> counts, const char* coll) const {
  if (counts.size() != static_cast<size_t>(opts_.ranks))
    throw ArgumentError(std::string("NCCL ") + coll + ": " + std::to_string(counts.size()) + " counts for " +
                        std::to_string(opts_.ranks) + " ranks");
}

void NcclComm::begin(const char* coll, StreamHandle stream) {
  check_usable(coll);
  coll_ = coll;
  ++calls_;
  side_->wait_for(stream);
  if (marks_) marks_->comm_begin(side_->get());  // after the wait: the span starts with the collective
}

void NcclComm::end(StreamHandle stream) {
  if (marks_) marks_->comm_end(side_->get());
  if (!overlapping_) side_->hand_back(stream);
}

void NcclComm::begin_overlap(StreamHandle stream) {
  check_usable("begin_overlap");
  overlap_ = stream;
  overlapping_ = true;
}

void NcclComm::end_overlap() {
  if (!overlapping_) return;
  overlapping_ = false;
  check_usable(coll_);
  side_->hand_back(overlap_);
}

void NcclComm::wait() {
  end_overlap();
  check_usable(coll_);
  const auto start = Clock::now();
  const auto deadline = start + opts_.timeout;
  for (;;) {
    const auto q = static_cast<cudaError_t>(side_->done_status());
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady) {
      (void)cudaGetLastError();
      fail(std::string("wait (CUDA: ") + cudaGetErrorName(q) + " " + cudaGetErrorString(q) + ")", 0);
    }
    ncclResult_t st = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm_, &st);
    if (r != ncclSuccess) fail("ncclCommGetAsyncError", r);
    if (st != ncclSuccess && st != ncclInProgress) fail("asynchronous operation", st);
    if (opts_.cancelled && opts_.cancelled()) fail("wait cancelled: a peer failed", 0);
    if (Clock::now() > deadline)
      fail("wait timed out after " + std::to_string(opts_.timeout.count()) +
               " ms (a peer is missing, stuck or called a different collective)",
           0);
    backoff(start);
  }
  ncclResult_t st = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(comm_, &st);
  if (r != ncclSuccess) fail("ncclCommGetAsyncError", r);
  if (st != ncclSuccess && st != ncclInProgress) fail("asynchronous operation", st);
}

// ---- collectives --------------------------------------------------------------------

void NcclComm::all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle stream) {
  begin("all_reduce", stream);
  if (count != 0)
    SYNK_NCCL_COMM_CALL(ncclAllReduce(in, out, count, nccl_type(t), nccl_op(op), comm_, side_->get()));
  end(stream);
}

void NcclComm::reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root,
                      StreamHandle stream) {
  check_root(root, "reduce");
  begin("reduce", stream);
  if (count != 0)
    SYNK_NCCL_COMM_CALL(ncclReduce(in, out, count, nccl_type(t), nccl_op(op), root, comm_, side_->get()));
  end(stream);
}

// ncclReduceScatter: the recvcount-element blocks of sendbuff, rank r's
// reduction into its recvbuff (in place where recvbuff = sendbuff + r *
// recvcount). NCCL's ring reduce-scatter is the first half of its ring
// all-reduce, but NCCL does not promise the two the same bits: the sharded
// optimizer's equality with the unsharded run holds where it does (the
// emulation reduces both in rank order).
void NcclComm::reduce_scatter(const void* in, void* out, size_t count, ElemType t, ReduceOp op,
                              StreamHandle stream) {
  begin("reduce_scatter", stream);
  if (count != 0)
    SYNK_NCCL_COMM_CALL(ncclReduceScatter(in, out, count, nccl_type(t), nccl_op(op), comm_, side_->get()));
  end(stream);
}

void NcclComm::broadcast(void* buf, size_t count, ElemType t, int root, StreamHandle stream) {
  check_root(root, "broadcast");
  begin("broadcast", stream);
  if (count != 0)
    SYNK_NCCL_COMM_CALL(ncclBroadcast(buf, buf, count, nccl_type(t), root, comm_, side_->get()));
  end(stream);
}

void NcclComm::all_gather(const void* in, void* out, size_t count, ElemType t, StreamHandle stream) {
  begin("all_gather", stream);
  if (count != 0) SYNK_NCCL_COMM_CALL(ncclAllGather(in, out, count, nccl_type(t), comm_, side_->get()));
  end(stream);
}

void NcclComm::gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                       StreamHandle stream) {
  check_root(root, "gatherv");
  check_counts(counts, "gatherv");
  begin("gatherv", stream);
  const int me = opts_.rank;
  const size_t es = elem_size(t);
  if (me == root) {
    // Own share first (a plain device copy on the same stream), then one
    // group with a receive per peer that sends something.
    size_t off = 0;
    for (int r = 0; r < me; ++r) off += counts[r];
    void* own = offset(out, off, t);
    if (counts[me] != 0 && own != in)
      SYNK_CUDA_CHECK(cudaMemcpyAsync(own, in, counts[me] * es, cudaMemcpyDeviceToDevice, side_->get()));
    SYNK_NCCL_COMM_CALL(ncclGroupStart());
    off = 0;
    for (int r = 0; r < opts_.ranks; ++r) {
      if (r != me && counts[r] != 0)
        SYNK_NCCL_COMM_CALL(ncclRecv(offset(out, off, t), counts[r], nccl_type(t), r, comm_, side_->get()));
      off += counts[r];
    }
    SYNK_NCCL_COMM_CALL(ncclGroupEnd());
  } else if (counts[me] != 0) {
    SYNK_NCCL_COMM_CALL(ncclGroupStart());
    SYNK_NCCL_COMM_CALL(ncclSend(in, counts[me], nccl_type(t), root, comm_, side_->get()));
    SYNK_NCCL_COMM_CALL(ncclGroupEnd());
  }
  end(stream);
}

void NcclComm::scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                        StreamHandle stream) {
  check_root(root, "scatterv");
  check_counts(counts, "scatterv");
  begin("scatterv", stream);
  const int me = opts_.rank;
  const size_t es = elem_size(t);
  if (me == root) {
    size_t off = 0;
    for (int r = 0; r < me; ++r) off += counts[r];
    const void* own = offset(in, off, t);
    if (counts[me] != 0 && own != out)
      SYNK_CUDA_CHECK(cudaMemcpyAsync(out, own, counts[me] * es, cudaMemcpyDeviceToDevice, side_->get()));
    SYNK_NCCL_COMM_CALL(ncclGroupStart());
    off = 0;
    for (int r = 0; r < opts_.ranks; ++r) {
      if (r != me && counts[r] != 0)
        SYNK_NCCL_COMM_CALL(ncclSend(offset(in, off, t), counts[r], nccl_type(t), r, comm_, side_->get()));
      off += counts[r];
    }
    SYNK_NCCL_COMM_CALL(ncclGroupEnd());
  } else if (counts[me] != 0) {
    SYNK_NCCL_COMM_CALL(ncclGroupStart());
    SYNK_NCCL_COMM_CALL(ncclRecv(out, counts[me], nccl_type(t), root, comm_, side_->get()));
    SYNK_NCCL_COMM_CALL(ncclGroupEnd());
  }
  end(stream);
}

void NcclComm::gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) {
  const RootCollective native = native_root_collectives().gather;
  if (!native) {
    std::vector<size_t> counts(static_cast<size_t>(opts_.ranks), count);
    gatherv(in, out, counts, t, root, stream);
    return;
  }
  check_root(root, "gather");
  begin("gather", stream);
  if (count != 0)
    finish(static_cast<int>(native(in, out, count, nccl_type(t), root, comm_, side_->get())),
           "ncclGather(in, out, count, type, root, comm, stream)", __FILE__, __LINE__);
  end(stream);
}

void NcclComm::scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) {
  const RootCollective native = native_root_collectives().scatter;
  if (!native) {
    std::vector<size_t> counts(static_cast<size_t>(opts_.ranks), count);
    scatterv(in, out, counts, t, root, stream);
    return;
  }
  check_root(root, "scatter");
  begin("scatter", stream);
  if (count != 0)
    finish(static_cast<int>(native(in, out, count, nccl_type(t), root, comm_, side_->get())),
           "ncclScatter(in, out, count, type, root, comm, stream)", __FILE__, __LINE__);
  end(stream);
}

}  // namespace synk::comm

#endif  // SYNK_HAVE_NCCL
