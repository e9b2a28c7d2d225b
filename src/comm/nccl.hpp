// src/comm/nccl.hpp — an NCCL communicator for one rank of a group of GPU
// processes, with collectives on device buffers and a watchdog (private
// header; exists only where SYNK_HAVE_NCCL is 1, guard with synk/config.hpp).
//
// The master makes the unique id (make_nccl_id: 128 plain bytes that can
// travel through shared memory, e.g. a CpuGroup broadcast); every rank then
// constructs an NcclComm with the same id, the rank count and its rank:
//
//   synk::comm::NcclId id;                       // in shared memory
//   if (rank == 0) id = synk::comm::make_nccl_id();
//   group.broadcast(&id, sizeof id, ElemType::i32 ... )  // or any shm handoff
//   synk::comm::NcclComm comm(id, {.ranks = n, .rank = rank, .device = rank});
//   comm.all_reduce(grad, grad, count, ElemType::f32, ReduceOp::avg, compute_stream);
//   comm.wait();                                  // raises instead of hanging
//
// Why non-blocking: the communicator is created with config.blocking = 0, so
// no NCCL call blocks the host. Initialisation, group ends and waits poll
// ncclCommGetAsyncError (and, for waits, an event on the communication
// stream) until done, an error, or `timeout`; on an error or timeout the
// communicator is aborted (ncclCommAbort makes its kernels return, so the
// streams drain) and BackendError names rank, GPU, collective and NCCL's
// error string. An aborted communicator throws on every later call: make a
// new one (with a new id).
//
// Streams: collectives run on the communicator's own stream (a
// cuda::SideStream); an event orders them after the caller's stream,
// another event makes the caller's stream wait for their result (no host
// synchronisation).
//
// make_nccl_id starts NCCL's bootstrap root thread in the calling process;
// call it after fork() (it creates no CUDA context either way).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <functional>
#include <span>
#include <string>

#include "comm/comm.hpp"
#include "cuda/side_stream.hpp"
#include "synk/config.hpp"

#if SYNK_HAVE_NCCL

struct ncclComm;  // ncclComm_t is ncclComm*

namespace synk::comm {

// NCCL's ncclUniqueId, as bytes (trivially copyable: shared memory, pipes).
struct NcclId {
  unsigned char bytes[128] = {};
};

// ncclGetUniqueId. Throws BackendError naming the call and NCCL's text.
NcclId make_nccl_id();

// NCCL's library version (e.g. 22809 for 2.28.9); 0 if it cannot be queried.
int nccl_version() noexcept;

// Whether gather and scatter use NCCL's own ncclGather/ncclScatter: only
// when the libnccl this process loaded (`library_version`, nccl_version(),
// not the headers synk was built with) is 2.28 or newer and both symbols
// were found in it. Else they take the grouped send/recv of
// gatherv/scatterv, which every NCCL since 2.7 has. Why at run time: the
// library on a GPU machine may be older than the headers, and a direct call
// to a symbol it lacks ends the process at the first gather.
bool use_native_gather_scatter(int library_version, bool symbols_found) noexcept;
// The choice for this process (symbols looked up once, with dlsym).
bool native_gather_scatter() noexcept;

// Throws BackendError for a failed NCCL call: call text, file:line, rank
// (-1: not part of a communicator), current device and NCCL's error string
// (plus `detail`, e.g. ncclGetLastError, when given).
[[noreturn]] void throw_nccl_error(int result, const char* call, const char* file, int line, int rank,
                                   const char* detail = nullptr);

// Runs an NCCL call outside a communicator (e.g. ncclGetUniqueId) and throws
// BackendError if it failed. Inside NcclComm, calls go through its watchdog.
#define SYNK_NCCL_CHECK(call)                                                          \
  do {                                                                                 \
    const int synk_nccl_result_ = static_cast<int>(call);                              \
    if (synk_nccl_result_ != 0)                                                        \
      ::synk::comm::throw_nccl_error(synk_nccl_result_, #call, __FILE__, __LINE__, -1); \
  } while (0)

struct NcclCommOptions {
  int ranks = 1;   // communicator size
  int rank = 0;    // this process's rank in [0, ranks)
  int device = 0;  // CUDA device ordinal (among the visible ones)
  // Bound on initialisation, each wait() and the destructor's flush.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  // Polled by every wait (initialisation, group ends, wait()); when it
  // returns true the communicator is aborted and the wait throws. The
  // runtime passes "the CpuGroup was aborted", so a peer that died while
  // this rank waits on NCCL ends the wait at once instead of at the timeout.
  std::function<bool()> cancelled;
};

class NcclComm final : public Comm {
 public:
  // ncclCommInitRankConfig (non-blocking) on opts.device, waited for with the
  // watchdog. Throws ArgumentError for a bad rank/size, BackendError if NCCL
  // fails or a peer does not join within opts.timeout.
  NcclComm(const NcclId& id, const NcclCommOptions& opts);
  // Waits (bounded by the timeout) for issued work, then finalises and
  // destroys the communicator; aborts it instead if that fails or it was
  // already aborted. Never throws.
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const noexcept override { return opts_.rank; }
  int size() const noexcept override { return opts_.ranks; }
  int device() const noexcept override { return opts_.device; }
  const char* backend() const noexcept override { return "nccl"; }

  void all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, StreamHandle stream) override;
  void reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root,
              StreamHandle stream) override;
  void broadcast(void* buf, size_t count, ElemType t, int root, StreamHandle stream) override;
  void reduce_scatter(const void* in, void* out, size_t count, ElemType t, ReduceOp op,
                      StreamHandle stream) override;
  void all_gather(const void* in, void* out, size_t count, ElemType t, StreamHandle stream) override;
  // Grouped ncclSend/ncclRecv (uneven counts; zero counts allowed).
  void gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
               StreamHandle stream) override;
  void scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root,
                StreamHandle stream) override;
  // NCCL's native ncclGather/ncclScatter where the loaded library has them
  // (native_gather_scatter()), else the grouped send/recv of gatherv/scatterv.
  void gather(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) override;
  void scatter(const void* in, void* out, size_t count, ElemType t, int root, StreamHandle stream) override;

  // Collectives between them leave `stream` free to run on (Comm::begin_overlap).
  void begin_overlap(StreamHandle stream) override;
  void end_overlap() override;
  void set_marks(GpuMarks* marks) override { marks_ = marks; }

  // Watchdog: polls the last collective's completion event and
  // ncclCommGetAsyncError until done, an error, or the timeout (then aborts).
  void wait() override;

  // Aborts the communicator now (e.g. when the master saw a peer die); every
  // later call throws. Never throws.
  void abort(const std::string& reason) noexcept override;
  bool aborted() const noexcept { return aborted_; }

  // The communication stream (cudaStream_t).
  StreamHandle stream() const noexcept { return side_->get(); }

  // Communicators of this process that are initialised and not yet
  // destroyed (the fault tests check that none outlives its runtime).
  static int live() noexcept;

 private:
  // Records an event on `stream` and makes the communication stream wait for it.
  void begin(const char* coll, StreamHandle stream);
  // Makes `stream` wait for the communication stream's work so far (during
  // an overlap: nothing until end_overlap()).
  void end(StreamHandle stream);
  // Result of an NCCL call on this communicator: success, or ncclInProgress
  // waited out with ncclCommGetAsyncError; anything else aborts and throws.
  void finish(int result, const char* call, const char* file, int line);
  // Polls ncclCommGetAsyncError until it is not ncclInProgress (init, group end).
  void settle(const char* call, const char* file, int line);
  [[noreturn]] void fail(const std::string& what, int result);
  void check_usable(const char* coll) const;
  void check_root(int root, const char* coll) const;
  void check_counts(std::span<const size_t> counts, const char* coll) const;

  NcclCommOptions opts_;
  ncclComm* comm_ = nullptr;
  std::optional<cuda::SideStream> side_;  // the collectives; made once the device is current
  bool aborted_ = false;
  std::string abort_reason_;
  const char* coll_ = "init";  // collective in flight, for messages
  uint64_t calls_ = 0;         // collectives issued, for messages
  StreamHandle overlap_ = nullptr;  // the caller's stream during an overlap
  bool overlapping_ = false;
  GpuMarks* marks_ = nullptr;  // the timeline's marks on side_ (set_marks)
  bool counted_ = false;       // in live()
};

}  // namespace synk::comm

#endif  // SYNK_HAVE_NCCL
