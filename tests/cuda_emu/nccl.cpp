// tests/cuda_emu/nccl.cpp — the emulated NCCL: nccl.h's functions that synk
// calls (and a few neighbours), between ranks that are processes or threads,
// over the shared segment of nccl_segment.hpp.
//
// What it keeps of NCCL, and where it is stricter:
// - Each collective or fused group runs on the stream it was issued on, in
//   stream order (synk_emu::enqueue), so a captured CUDA graph replays it.
//   Device pointers of the emulation are host memory of each process, so a
//   collective copies each rank's share into the segment, waits for all
//   ranks (barrier), reduces in rank order (bitwise identical on every rank
//   and every run) and copies the result out, in steps of kCollChunk bytes.
// - Non-blocking communicators (config.blocking = 0): init, every collective
//   issued outside a group, ncclGroupEnd and ncclCommFinalize return
//   ncclInProgress, and ncclCommGetAsyncError reports ncclInProgress until
//   the work is issued (init: until every rank joined). Issuing the next call
//   before the state was polled back to ncclSuccess is refused
//   (ncclInvalidUsage), as NCCL documents it must not be done.
// - Every rank publishes what it runs before a collective's first barrier;
//   mismatched collectives (kind, count, type, op, root) and send/recv pairs
//   with different counts or types fail with ncclInvalidUsage on every rank
//   instead of hanging or corrupting memory. Zero counts are matched too.
// - Any rank's error or ncclCommAbort poisons the communicator: waiting
//   peers return at once and report ncclRemoteError; a peer whose process
//   exited does the same within about 50 ms (nccl_segment.hpp).
// - Buffers must be emulated device memory (synk_emu::device_accessible)
//   and the stream must belong to the communicator's device.
// - Reductions cover the integer types, float32 and float64; float16,
//   bfloat16 and fp8 move (broadcast, gather, send, ...) but do not reduce
//   (ncclInvalidArgument, saying so).
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "emu.hpp"
#include "nccl_segment.hpp"

using synk_emu::nccl::Channel;
using synk_emu::nccl::Desc;
using synk_emu::nccl::kCollChunk;
using synk_emu::nccl::kP2PChunk;
using synk_emu::nccl::Segment;

namespace {

enum class Kind : int32_t { all_reduce, reduce, broadcast, all_gather, reduce_scatter, gather, scatter, send, recv };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::all_reduce: return "ncclAllReduce";
    case Kind::reduce: return "ncclReduce";
    case Kind::broadcast: return "ncclBroadcast";
    case Kind::all_gather: return "ncclAllGather";
    case Kind::reduce_scatter: return "ncclReduceScatter";
    case Kind::gather: return "ncclGather";
    case Kind::scatter: return "ncclScatter";
    case Kind::send: return "ncclSend";
    case Kind::recv: return "ncclRecv";
  }
  return "?";
}

bool is_p2p(Kind k) { return k == Kind::send || k == Kind::recv; }

struct Op {
  Kind kind;
  const void* sendbuff;
  void* recvbuff;
  size_t count;
  ncclDataType_t dtype;
  ncclRedOp_t op;  // reductions; else ncclSum
  int root;        // rooted collectives: the root; send/recv: the peer; else -1
  cudaStream_t stream;
};

size_t elem_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
    case ncclFloat8e4m3:
    case ncclFloat8e5m2: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    default: return 0;
  }
}

// ---- errors -------------------------------------------------------------------------

std::mutex g_error_mu;
std::string g_last_error;  // ncclGetLastError(nullptr), and the latest of any communicator

void set_global_error(const std::string& s) {
  std::lock_guard lk(g_error_mu);
  g_last_error = s;
}

}  // namespace

// ---- the communicator ---------------------------------------------------------------

namespace synk_emu::nccl {

struct Comm {
  int nranks = 0;
  int rank = 0;
  int device = 0;
  bool blocking = true;
  ncclUniqueId id{};

  std::atomic<bool> stop{false};             // ncclCommAbort: ends this rank's waits
  std::atomic<int> init_state{ncclInProgress};  // ncclSuccess once every rank joined
  std::atomic<int> async{ncclSuccess};       // sticky asynchronous error
  std::atomic<int> unpolled{0};              // an ncclInProgress not yet polled away
  std::atomic<int> flush_pending{0};         // finalize: stream markers not yet run
  std::thread joiner;                        // non-blocking init

  // One collective or group at a time; ncclCommAbort/Destroy take it to
  // release the segment, so running work never sees it vanish.
  std::mutex exec_mu;
  std::unique_ptr<Segment> seg;  // null once released
  uint64_t coll_seq = 0;         // collectives run (exec_mu)
  uint64_t barriers = 0;         // barriers passed (exec_mu)

  std::mutex mu;  // last_error, streams, joiner
  std::string last_error;
  std::vector<cudaStream_t> streams;  // streams work was issued on (finalize flushes them)

  void error(const std::string& s) {
    {
      std::lock_guard lk(mu);
      last_error = s;
    }
    set_global_error(s);
  }
  // An asynchronous failure: the first one sticks.
  void fail(ncclResult_t r, const std::string& s) {
    error(s);
    int expected = ncclSuccess;
    async.compare_exchange_strong(expected, r);
  }
  std::string prefix() const { return "rank " + std::to_string(rank) + " of " + std::to_string(nranks) + ": "; }
};

}  // namespace synk_emu::nccl

using synk_emu::nccl::Comm;

// nccl.h's handle type: the public ncclComm_t points here. Work queued on a
// stream holds the Comm itself, so a handle destroyed while work is queued
// (or captured in a graph) never leaves that work with a dangling pointer.
struct ncclComm {
  std::shared_ptr<Comm> c;
};

namespace {

// ---- reductions ---------------------------------------------------------------------

template <class T> T apply(ncclRedOp_t op, T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    // Wrap-around like the GPU's integer arithmetic (no signed-overflow UB).
    using U = std::make_unsigned_t<T>;
    switch (op) {
      case ncclSum:
      case ncclAvg: return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
      case ncclProd: return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
      case ncclMax: return b > a ? b : a;
      case ncclMin: return b < a ? b : a;
      default: return a;
    }
  } else {
    switch (op) {
      case ncclSum:
      case ncclAvg: return a + b;
      case ncclProd: return a * b;
      case ncclMax: return b > a ? b : a;
      case ncclMin: return b < a ? b : a;
      default: return a;
    }
  }
}

// out[i] = in[0][i] op in[1][i] op ... in rank order. Average: floats sum
// the terms pre-multiplied by 1/n (as NCCL's ncclAvg), integers divide the
// sum, truncating toward zero.
template <class T> void reduce_typed(void* out, const std::vector<const char*>& in, size_t m, ncclRedOp_t op) {
  const int n = static_cast<int>(in.size());
  T* o = static_cast<T*>(out);
  if constexpr (std::is_floating_point_v<T>) {
    if (op == ncclAvg) {
      const T scale = T(1) / static_cast<T>(n);
      for (size_t i = 0; i < m; ++i) {
        T acc = reinterpret_cast<const T*>(in[0])[i] * scale;
        for (int r = 1; r < n; ++r) acc = acc + reinterpret_cast<const T*>(in[static_cast<size_t>(r)])[i] * scale;
        o[i] = acc;
      }
      return;
    }
  }
  for (size_t i = 0; i < m; ++i) {
    T acc = reinterpret_cast<const T*>(in[0])[i];
    for (int r = 1; r < n; ++r) acc = apply<T>(op, acc, reinterpret_cast<const T*>(in[static_cast<size_t>(r)])[i]);
    if constexpr (std::is_integral_v<T>)
      if (op == ncclAvg) acc = static_cast<T>(acc / static_cast<T>(n));
    o[i] = acc;
  }
}

bool reducible(ncclDataType_t t) {
  switch (t) {
    case ncclInt8:
    case ncclUint8:
    case ncclInt32:
    case ncclUint32:
    case ncclInt64:
    case ncclUint64:
    case ncclFloat32:
    case ncclFloat64: return true;
    default: return false;
  }
}

void reduce_into(void* out, const std::vector<const char*>& in, size_t m, ncclDataType_t t, ncclRedOp_t op) {
  switch (t) {
    case ncclInt8: return reduce_typed<int8_t>(out, in, m, op);
    case ncclUint8: return reduce_typed<uint8_t>(out, in, m, op);
    case ncclInt32: return reduce_typed<int32_t>(out, in, m, op);
    case ncclUint32: return reduce_typed<uint32_t>(out, in, m, op);
    case ncclInt64: return reduce_typed<int64_t>(out, in, m, op);
    case ncclUint64: return reduce_typed<uint64_t>(out, in, m, op);
    case ncclFloat32: return reduce_typed<float>(out, in, m, op);
    case ncclFloat64: return reduce_typed<double>(out, in, m, op);
    default: return;  // refused when issued
  }
}

// ---- execution (on the stream's thread) ---------------------------------------------

ncclResult_t barrier(Comm& c, std::string& err) {
  Segment& s = *c.seg;
  const uint64_t k = ++c.barriers;
  s.slot(c.rank)->arrive.store(k, std::memory_order_release);
  s.ring_all();
  return s.wait(
      [&] {
        for (int r = 0; r < c.nranks; ++r)
          if (s.slot(r)->arrive.load(std::memory_order_acquire) < k) return false;
        return true;
      },
      {}, c.stop, err);
}

std::string describe(const Desc& d) {
  std::string s = kind_name(static_cast<Kind>(d.kind));
  s += "(count " + std::to_string(d.count) + ", type " + std::to_string(d.dtype);
  if (d.op >= 0) s += ", op " + std::to_string(d.op);
  if (d.root >= 0) s += ", root " + std::to_string(d.root);
  s += ") as collective #" + std::to_string(d.seq);
  return s;
}

ncclResult_t run_collective(Comm& c, const Op& o, std::string& err) {
  Segment& s = *c.seg;
  const int n = c.nranks;
  const int me = c.rank;
  const size_t es = elem_size(o.dtype);
  const bool reduction = o.kind == Kind::all_reduce || o.kind == Kind::reduce || o.kind == Kind::reduce_scatter;
  const bool rooted = o.kind == Kind::reduce || o.kind == Kind::broadcast || o.kind == Kind::gather ||
                      o.kind == Kind::scatter;
  s.slot(me)->desc = Desc{c.coll_seq++, static_cast<int32_t>(o.kind), static_cast<int32_t>(o.dtype),
                          reduction ? static_cast<int32_t>(o.op) : -1, rooted ? o.root : -1, o.count};
  if (const ncclResult_t r = barrier(c, err); r != ncclSuccess) return r;
  const Desc mine = s.slot(me)->desc;
  for (int r = 0; r < n; ++r) {
    const Desc d = s.slot(r)->desc;
    if (std::memcmp(&d, &mine, sizeof d) != 0) {
      err = c.prefix() + "mismatched collectives: rank " + std::to_string(r) + " called " + describe(d) + ", rank " +
            std::to_string(me) + " " + describe(mine);
      s.poison(ncclInvalidUsage, err);
      return ncclInvalidUsage;
    }
  }

  const char* send = static_cast<const char*>(o.sendbuff);
  char* recv = static_cast<char*>(o.recvbuff);
  // Elements of one rank's share per step (reduce-scatter splits each
  // rank's area between the n destination blocks).
  const size_t per = o.kind == Kind::reduce_scatter ? kCollChunk / es / static_cast<size_t>(n) : kCollChunk / es;
  std::vector<const char*> in(static_cast<size_t>(n));
  size_t steps = 0;
  for (size_t off = 0; off < o.count; off += per, ++steps) {
    const size_t m = std::min(per, o.count - off);
    const size_t bytes = m * es;
    // Each rank puts its part of this step into the segment ...
    switch (o.kind) {
      case Kind::all_reduce:
      case Kind::reduce:
      case Kind::all_gather:
      case Kind::gather: std::memcpy(s.coll_area(me), send + off * es, bytes); break;
      case Kind::broadcast:
        if (me == o.root) std::memcpy(s.coll_area(me), send + off * es, bytes);
        break;
      case Kind::scatter:
        if (me == o.root)
          for (int r = 0; r < n; ++r)
            std::memcpy(s.coll_area(r), send + (static_cast<size_t>(r) * o.count + off) * es, bytes);
        break;
      case Kind::reduce_scatter:
        for (int r = 0; r < n; ++r)
          std::memcpy(s.coll_area(me) + static_cast<size_t>(r) * per * es,
                      send + (static_cast<size_t>(r) * o.count + off) * es, bytes);
        break;
      default: break;
    }
    if (const ncclResult_t r = barrier(c, err); r != ncclSuccess) return r;
    // ... then takes what it needs, reducing in rank order.
    switch (o.kind) {
      case Kind::all_reduce:
      case Kind::reduce:
        if (o.kind == Kind::all_reduce || me == o.root) {
          for (int r = 0; r < n; ++r) in[static_cast<size_t>(r)] = s.coll_area(r);
          reduce_into(recv + off * es, in, m, o.dtype, o.op);
        }
        break;
      case Kind::reduce_scatter:
        for (int r = 0; r < n; ++r) in[static_cast<size_t>(r)] = s.coll_area(r) + static_cast<size_t>(me) * per * es;
        reduce_into(recv + off * es, in, m, o.dtype, o.op);
        break;
      case Kind::broadcast: std::memmove(recv + off * es, s.coll_area(o.root), bytes); break;
      case Kind::all_gather:
      case Kind::gather:
        if (o.kind == Kind::all_gather || me == o.root)
          for (int r = 0; r < n; ++r)
            std::memmove(recv + (static_cast<size_t>(r) * o.count + off) * es, s.coll_area(r), bytes);
        break;
      case Kind::scatter: std::memmove(recv + off * es, s.coll_area(me), bytes); break;
      default: break;
    }
    // Nobody refills the segment before everyone has read it.
    if (const ncclResult_t r = barrier(c, err); r != ncclSuccess) return r;
  }
  // Without a step, the descriptors must stay until everyone compared them.
  if (steps == 0)
    if (const ncclResult_t r = barrier(c, err); r != ncclSuccess) return r;
  return ncclSuccess;
}

// A group's sends and receives progress together (a chunk whenever its
// channel allows), so any pattern NCCL completes in one group completes
// here; operations on the same channel go in issue order.
ncclResult_t run_p2p(Comm& c, const std::vector<const Op*>& ops, std::string& err) {
  Segment& s = *c.seg;
  const int me = c.rank;
  struct State {
    size_t done = 0;
    bool started = false;
    bool finished = false;
  };
  std::vector<State> st(ops.size());

  // Whether op i is the first unfinished one on its channel and can move a chunk now.
  auto ready = [&](size_t i) {
    const Op& o = *ops[i];
    for (size_t j = 0; j < i; ++j)
      if (!st[j].finished && ops[j]->kind == o.kind && ops[j]->root == o.root) return false;
    if (o.kind == Kind::send) {
      const Channel* ch = s.chan(me, o.root);
      return ch->consumed.load(std::memory_order_acquire) == ch->posted.load(std::memory_order_relaxed);
    }
    const Channel* ch = s.chan(o.root, me);
    return ch->posted.load(std::memory_order_acquire) > ch->consumed.load(std::memory_order_relaxed);
  };

  for (;;) {
    bool all_done = true;
    bool moved = false;
    for (size_t i = 0; i < ops.size(); ++i) {
      if (st[i].finished) continue;
      all_done = false;
      if (!ready(i)) continue;
      const Op& o = *ops[i];
      State& x = st[i];
      const size_t total = o.count * elem_size(o.dtype);
      if (o.kind == Kind::send) {
        Channel* ch = s.chan(me, o.root);
        const size_t len = std::min(kP2PChunk, total - x.done);
        ch->len = len;
        ch->first = !x.started;
        ch->msg_bytes = total;
        ch->msg_count = o.count;
        ch->msg_dtype = o.dtype;
        std::memcpy(s.chan_buf(me, o.root), static_cast<const char*>(o.sendbuff) + x.done, len);
        ch->posted.fetch_add(1, std::memory_order_release);
        s.ring(o.root);
        x.done += len;
      } else {
        Channel* ch = s.chan(o.root, me);
        if (!x.started &&
            (!ch->first || ch->msg_count != o.count || ch->msg_dtype != o.dtype || ch->msg_bytes != total)) {
          err = c.prefix() + "ncclRecv of " + std::to_string(o.count) + " elements of type " +
                std::to_string(o.dtype) + " from rank " + std::to_string(o.root) + " met an ncclSend of " +
                std::to_string(ch->msg_count) + " elements of type " + std::to_string(ch->msg_dtype);
          s.poison(ncclInvalidUsage, err);
          return ncclInvalidUsage;
        }
        const size_t len = ch->len;
        std::memcpy(static_cast<char*>(o.recvbuff) + x.done, s.chan_buf(o.root, me), len);
        ch->consumed.fetch_add(1, std::memory_order_release);
        s.ring(o.root);
        x.done += len;
      }
      x.started = true;
      x.finished = x.done == total;
      moved = true;
    }
    if (all_done) return ncclSuccess;
    if (!moved) {
      // Only the peers of unfinished operations matter: one whose messages
      // all went through may destroy its communicator or exit.
      std::vector<int> awaited;
      for (size_t i = 0; i < ops.size(); ++i)
        if (!st[i].finished && std::find(awaited.begin(), awaited.end(), ops[i]->root) == awaited.end())
          awaited.push_back(ops[i]->root);
      const ncclResult_t r = s.wait(
          [&] {
            for (size_t i = 0; i < ops.size(); ++i)
              if (!st[i].finished && ready(i)) return true;
            return false;
          },
          awaited, c.stop, err);
      if (r != ncclSuccess) return r;
    }
  }
}

// What a stream runs for one call or one group on one communicator.
void run_task(const std::shared_ptr<Comm>& cp, const std::vector<Op>& ops) {
  Comm& c = *cp;
  std::lock_guard lk(c.exec_mu);
  // An aborted or destroyed communicator's work does nothing, like the
  // kernels of an aborted NCCL communicator; a failed one's neither.
  if (!c.seg || c.stop.load() || c.async.load() != ncclSuccess) return;
  std::string err;
  ncclResult_t r = ncclSuccess;
  std::vector<const Op*> p2p;
  for (const Op& o : ops) {
    if (is_p2p(o.kind)) {
      p2p.push_back(&o);
      continue;
    }
    r = run_collective(c, o, err);
    if (r != ncclSuccess) break;
  }
  if (r == ncclSuccess && !p2p.empty()) r = run_p2p(c, p2p, err);
  if (r != ncclSuccess && !c.stop.load()) c.fail(r, c.prefix() + err);
}

// ---- issuing (on the caller's thread) -----------------------------------------------

// The calling thread's open group (ncclGroupStart .. ncclGroupEnd).
thread_local int t_depth = 0;
thread_local std::vector<std::pair<std::shared_ptr<Comm>, Op>> t_ops;
thread_local ncclResult_t t_group_error = ncclSuccess;

ncclResult_t refuse(Comm* c, ncclResult_t r, const std::string& why) {
  if (c)
    c->error(c->prefix() + why);
  else
    set_global_error(why);
  if (t_depth > 0 && t_group_error == ncclSuccess) t_group_error = r;
  return r;
}

// A communicator that may take new work: initialised, not failed, not
// waiting for an ncclInProgress to be polled away.
ncclResult_t check_usable(ncclComm_t comm, const char* call) {
  if (!comm || !comm->c) return refuse(nullptr, ncclInvalidArgument, std::string(call) + ": comm is NULL");
  Comm& c = *comm->c;
  const int init = c.init_state.load();
  if (init == ncclInProgress)
    return refuse(&c, ncclInvalidUsage,
                  std::string(call) + " before the communicator finished initialising (poll ncclCommGetAsyncError)");
  if (init != ncclSuccess) return refuse(&c, static_cast<ncclResult_t>(init), std::string(call) + ": init failed");
  if (const int a = c.async.load(); a != ncclSuccess)
    return refuse(&c, static_cast<ncclResult_t>(a), std::string(call) + ": the communicator has failed earlier");
  if (c.unpolled.load())
    return refuse(&c, ncclInvalidUsage,
                  std::string(call) +
                      " while the previous call is still ncclInProgress (poll ncclCommGetAsyncError until ncclSuccess "
                      "first)");
  return ncclSuccess;
}

bool device_buffer(const void* p, size_t bytes) { return bytes == 0 || synk_emu::device_accessible(p, bytes); }

// Argument checks NCCL makes (and a few it does not), then the op goes into
// the open group or straight onto its stream.
ncclResult_t issue(ncclComm_t comm, const Op& o) {
  const char* call = kind_name(o.kind);
  if (const ncclResult_t r = check_usable(comm, call); r != ncclSuccess) return r;
  Comm& c = *comm->c;
  const size_t es = elem_size(o.dtype);
  if (es == 0 || o.dtype < 0 || o.dtype >= ncclNumTypes)
    return refuse(&c, ncclInvalidArgument, std::string(call) + ": invalid datatype " + std::to_string(o.dtype));
  const bool reduction = o.kind == Kind::all_reduce || o.kind == Kind::reduce || o.kind == Kind::reduce_scatter;
  if (reduction) {
    if (o.op < 0 || o.op >= ncclNumOps)
      return refuse(&c, ncclInvalidArgument, std::string(call) + ": invalid reduction " + std::to_string(o.op));
    if (!reducible(o.dtype))
      return refuse(&c, ncclInvalidArgument,
                    std::string(call) + ": the emulation does not reduce datatype " + std::to_string(o.dtype));
  }
  const bool rooted = o.kind == Kind::reduce || o.kind == Kind::broadcast || o.kind == Kind::gather ||
                      o.kind == Kind::scatter || is_p2p(o.kind);
  if (rooted && (o.root < 0 || o.root >= c.nranks))
    return refuse(&c, ncclInvalidArgument,
                  std::string(call) + ": " + (is_p2p(o.kind) ? "peer " : "root ") + std::to_string(o.root) +
                      " out of range for " + std::to_string(c.nranks) + " ranks");
  const size_t one = o.count * es;
  const size_t all = one * static_cast<size_t>(c.nranks);
  const bool root = o.root == c.rank;
  size_t send_bytes = 0, recv_bytes = 0;
  switch (o.kind) {
    case Kind::all_reduce: send_bytes = recv_bytes = one; break;
    case Kind::reduce: send_bytes = one, recv_bytes = root ? one : 0; break;
    case Kind::broadcast: send_bytes = root ? one : 0, recv_bytes = one; break;
    case Kind::all_gather: send_bytes = one, recv_bytes = all; break;
    case Kind::reduce_scatter: send_bytes = all, recv_bytes = one; break;
    case Kind::gather: send_bytes = one, recv_bytes = root ? all : 0; break;
    case Kind::scatter: send_bytes = root ? all : 0, recv_bytes = one; break;
    case Kind::send: send_bytes = one; break;
    case Kind::recv: recv_bytes = one; break;
  }
  if (!device_buffer(o.sendbuff, send_bytes))
    return refuse(&c, ncclInvalidArgument,
                  std::string(call) + ": sendbuff is not " + std::to_string(send_bytes) + " bytes of device memory");
  if (!device_buffer(o.recvbuff, recv_bytes))
    return refuse(&c, ncclInvalidArgument,
                  std::string(call) + ": recvbuff is not " + std::to_string(recv_bytes) + " bytes of device memory");
  const int sd = synk_emu::stream_device(o.stream);
  if (sd < 0) return refuse(&c, ncclUnhandledCudaError, std::string(call) + ": invalid stream");
  if (sd != c.device)
    return refuse(&c, ncclInvalidUsage,
                  std::string(call) + ": the stream is on device " + std::to_string(sd) + ", the communicator on " +
                      std::to_string(c.device));

  if (t_depth > 0) {
    t_ops.emplace_back(comm->c, o);
    return ncclSuccess;
  }
  std::vector<Op> ops{o};
  {
    std::lock_guard lk(c.mu);
    if (std::find(c.streams.begin(), c.streams.end(), o.stream) == c.streams.end()) c.streams.push_back(o.stream);
  }
  const cudaError_t e = synk_emu::enqueue(o.stream, [cp = comm->c, ops] { run_task(cp, ops); }, call);
  if (e != cudaSuccess) return refuse(&c, ncclUnhandledCudaError, std::string(call) + ": could not queue on the stream");
  if (!c.blocking) {
    c.unpolled.store(1);
    return ncclInProgress;
  }
  return ncclSuccess;
}

int emulated_version() {
  if (const char* v = std::getenv("SYNK_EMU_NCCL_VERSION"); v && *v) return std::atoi(v);
  return NCCL_VERSION_CODE;
}

// Waits (bounded only by the work itself, which ends on a peer's death or
// abort) until `c`'s work issued so far on every stream has run.
void start_flush(const std::shared_ptr<Comm>& cp) {
  Comm& c = *cp;
  std::vector<cudaStream_t> streams;
  {
    std::lock_guard lk(c.mu);
    streams = c.streams;
  }
  for (cudaStream_t s : streams) {
    c.flush_pending.fetch_add(1);
    if (synk_emu::enqueue(s, [cp] { cp->flush_pending.fetch_sub(1); }, "ncclCommFinalize") != cudaSuccess)
      c.flush_pending.fetch_sub(1);  // a destroyed stream has nothing left to run
  }
}

// Ends the rank's part: stops the joiner, lets running work return, and
// releases the segment (the memory goes with the last rank).
void release(Comm& c, bool abort) {
  if (abort) c.stop.store(true);
  {
    std::lock_guard lk(c.mu);
    if (c.joiner.joinable()) c.joiner.join();
  }
  std::lock_guard lk(c.exec_mu);
  if (!c.seg) return;
  if (c.seg->hdr()) {
    if (abort)
      c.seg->poison(ncclRemoteError, "rank " + std::to_string(c.rank) + " called ncclCommAbort");
    else
      c.seg->leave();
  }
  c.seg.reset();
}

}  // namespace

// ---- the API ------------------------------------------------------------------------

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return ncclInvalidArgument;
  *version = emulated_version();
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  if (!uniqueId) return refuse(nullptr, ncclInvalidArgument, "ncclGetUniqueId: uniqueId is NULL");
  return synk_emu::nccl::make_id(uniqueId);
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (emulated NCCL)";
    case ncclSystemError: return "unhandled system error (emulated NCCL)";
    case ncclInternalError: return "internal error (emulated NCCL)";
    case ncclInvalidArgument: return "invalid argument (emulated NCCL)";
    case ncclInvalidUsage: return "invalid usage (emulated NCCL)";
    case ncclRemoteError: return "remote process exited or there was a network error (emulated NCCL)";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  // A copy per thread: the communicator's text may change under the caller.
  thread_local std::string copy;
  if (comm && comm->c) {
    std::lock_guard lk(comm->c->mu);
    copy = comm->c->last_error;
  } else {
    std::lock_guard lk(g_error_mu);
    copy = g_last_error;
  }
  return copy.c_str();
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t* config) {
  if (!comm) return refuse(nullptr, ncclInvalidArgument, "ncclCommInitRankConfig: comm is NULL");
  *comm = nullptr;
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return refuse(nullptr, ncclInvalidArgument,
                  "ncclCommInitRankConfig: rank " + std::to_string(rank) + " of " + std::to_string(nranks));
  if (!synk_emu::nccl::valid_id(commId))
    return refuse(nullptr, ncclInvalidArgument, "ncclCommInitRankConfig: the unique id is not from ncclGetUniqueId");
  if (config && (config->magic != 0xcafebeef || config->size < offsetof(ncclConfig_t, cgaClusterSize)))
    return refuse(nullptr, ncclInvalidArgument,
                  "ncclCommInitRankConfig: config not set up with NCCL_CONFIG_INITIALIZER");
  auto c = std::make_shared<Comm>();
  c->nranks = nranks;
  c->rank = rank;
  c->device = synk_emu::current_device();
  c->blocking = !(config && config->blocking == 0);
  c->id = commId;
  c->seg = std::make_unique<Segment>();
  auto* h = new ncclComm{c};
  auto join = [](Comm& x) {
    std::string err;
    const ncclResult_t r = x.seg->join(x.id, x.nranks, x.rank, x.stop, err);
    if (r != ncclSuccess) x.error(x.prefix() + "ncclCommInitRankConfig: " + err);
    x.init_state.store(r);
    return r;
  };
  if (c->blocking) {
    const ncclResult_t r = join(*c);
    if (r != ncclSuccess) {
      release(*c, true);
      delete h;
      return r;
    }
    *comm = h;
    return ncclSuccess;
  }
  // Non-blocking: the rendezvous runs on its own thread; the caller polls
  // ncclCommGetAsyncError (ncclInProgress until every rank joined).
  c->joiner = std::thread([raw = c.get(), join] { join(*raw); });
  *comm = h;
  return ncclInProgress;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  return ncclCommInitRankConfig(comm, nranks, commId, rank, nullptr);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (!comm || !comm->c || !asyncError) return refuse(nullptr, ncclInvalidArgument, "ncclCommGetAsyncError: NULL argument");
  Comm& c = *comm->c;
  const int init = c.init_state.load();
  if (init == ncclInProgress) {
    *asyncError = ncclInProgress;
    return ncclSuccess;
  }
  {
    std::lock_guard lk(c.mu);
    if (c.joiner.joinable()) c.joiner.join();
  }
  if (init != ncclSuccess) {
    *asyncError = static_cast<ncclResult_t>(init);
  } else if (const int a = c.async.load(); a != ncclSuccess) {
    *asyncError = static_cast<ncclResult_t>(a);
  } else if (c.flush_pending.load() > 0) {
    *asyncError = ncclInProgress;
  } else if (c.unpolled.exchange(0)) {
    *asyncError = ncclInProgress;  // issued; the next poll says ncclSuccess
  } else {
    *asyncError = ncclSuccess;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return ncclInvalidArgument;
  *count = comm->c->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (!comm || !device) return ncclInvalidArgument;
  *device = comm->c->device;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return ncclInvalidArgument;
  *rank = comm->c->rank;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  if (const ncclResult_t r = check_usable(comm, "ncclCommFinalize"); r != ncclSuccess) return r;
  Comm& c = *comm->c;
  start_flush(comm->c);
  if (!c.blocking) return c.flush_pending.load() > 0 ? ncclInProgress : ncclSuccess;
  while (c.flush_pending.load() > 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return refuse(nullptr, ncclInvalidArgument, "ncclCommDestroy: comm is NULL");
  Comm& c = *comm->c;
  if (c.init_state.load() == ncclSuccess && c.async.load() == ncclSuccess) {
    // Destroy without finalize flushes first, as NCCL does.
    if (c.flush_pending.load() == 0) start_flush(comm->c);
    while (c.flush_pending.load() > 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  release(c, c.init_state.load() == ncclInProgress);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  release(*comm->c, true);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  if (t_depth++ == 0) {
    t_ops.clear();
    t_group_error = ncclSuccess;
  }
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_depth == 0) return refuse(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--t_depth > 0) return ncclSuccess;
  auto ops = std::move(t_ops);
  t_ops.clear();
  if (t_group_error != ncclSuccess) return t_group_error;  // the failed call already said why
  // One task per communicator, in the order they first appear, on that
  // communicator's stream.
  ncclResult_t result = ncclSuccess;
  std::vector<std::shared_ptr<Comm>> comms;
  for (auto& [c, o] : ops)
    if (std::find(comms.begin(), comms.end(), c) == comms.end()) comms.push_back(c);
  for (auto& cp : comms) {
    std::vector<Op> mine;
    for (auto& [c, o] : ops)
      if (c == cp) mine.push_back(o);
    const cudaStream_t stream = mine.front().stream;
    for (const Op& o : mine)
      if (o.stream != stream)
        return refuse(cp.get(), ncclInvalidUsage,
                      "ncclGroupEnd: one communicator's operations on different streams (not emulated)");
    {
      std::lock_guard lk(cp->mu);
      if (std::find(cp->streams.begin(), cp->streams.end(), stream) == cp->streams.end())
        cp->streams.push_back(stream);
    }
    if (synk_emu::enqueue(stream, [cp, mine] { run_task(cp, mine); }, "ncclGroupEnd") != cudaSuccess)
      return refuse(cp.get(), ncclUnhandledCudaError, "ncclGroupEnd: could not queue on the stream");
    if (!cp->blocking) {
      cp->unpolled.store(1);
      result = ncclInProgress;
    }
  }
  return result;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return issue(comm, Op{Kind::all_reduce, sendbuff, recvbuff, count, datatype, op, -1, stream});
}

ncclResult_t ncclReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                        int root, ncclComm_t comm, cudaStream_t stream) {
  return issue(comm, Op{Kind::reduce, sendbuff, recvbuff, count, datatype, op, root, stream});
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  return issue(comm, Op{Kind::broadcast, sendbuff, recvbuff, count, datatype, ncclSum, root, stream});
}

ncclResult_t ncclBcast(void* buff, size_t count, ncclDataType_t datatype, int root, ncclComm_t comm,
                       cudaStream_t stream) {
  return ncclBroadcast(buff, buff, count, datatype, root, comm, stream);
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  return issue(comm, Op{Kind::all_gather, sendbuff, recvbuff, sendcount, datatype, ncclSum, -1, stream});
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return issue(comm, Op{Kind::reduce_scatter, sendbuff, recvbuff, recvcount, datatype, op, -1, stream});
}

// ncclGather/ncclScatter exist since NCCL 2.28; an emulated older version
// (SYNK_EMU_NCCL_VERSION) refuses them as an older library lacks them.
ncclResult_t ncclGather(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                        ncclComm_t comm, cudaStream_t stream) {
  if (emulated_version() < NCCL_VERSION(2, 28, 0))
    return refuse(comm ? comm->c.get() : nullptr, ncclInvalidUsage, "ncclGather: not in the emulated NCCL version");
  return issue(comm, Op{Kind::gather, sendbuff, recvbuff, count, datatype, ncclSum, root, stream});
}

ncclResult_t ncclScatter(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                         ncclComm_t comm, cudaStream_t stream) {
  if (emulated_version() < NCCL_VERSION(2, 28, 0))
    return refuse(comm ? comm->c.get() : nullptr, ncclInvalidUsage, "ncclScatter: not in the emulated NCCL version");
  return issue(comm, Op{Kind::scatter, sendbuff, recvbuff, count, datatype, ncclSum, root, stream});
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return issue(comm, Op{Kind::send, sendbuff, nullptr, count, datatype, ncclSum, peer, stream});
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return issue(comm, Op{Kind::recv, nullptr, recvbuff, count, datatype, ncclSum, peer, stream});
}

}  // extern "C"
