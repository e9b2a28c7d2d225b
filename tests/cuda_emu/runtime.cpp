// tests/cuda_emu/runtime.cpp — the emulated CUDA runtime: devices, memory,
// streams (a worker thread each), events, stream capture and graph replay,
// host registration, the last error and CUDA's fork rule. It exports the
// cuda* functions synk calls with the real headers' signatures (the header
// is included, so where CUDA 13 renames a function by macro the definition
// below gets the name the call sites reference).
//
// Deliberately stricter than a GPU where that is cheap, so that synk's
// missing synchronisations fail here rather than by chance on a GPU:
//  - a device-to-host copy writes the host memory only at a host
//    synchronisation that covers it (stream/event/device synchronize, a
//    successful query, a synchronous cudaMemcpy), or when a later operation
//    that may read host memory runs after it in stream order or behind an
//    event wait;
//  - host-to-device copies read their source when the stream gets to them;
//    a synchronous cudaMemcpy from pageable memory returns once the source
//    is staged, before the copy is done (as CUDA documents);
//  - cudaMalloc fills new memory with 0xFF bytes (a NaN in every float);
//  - work runs on its own thread per stream, so only events, the legacy
//    stream's implicit ordering and synchronisation order streams.
#include "emu.hpp"

#include <cuda_runtime_api.h>
#include <malloc.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace synk_emu {
namespace {

// ---- process state and the fork rule -------------------------------------------------

// Set by the first call that creates CUDA state in this process.
std::atomic<bool> g_initialised{false};
// A child forked after its parent initialised CUDA: every call fails, as
// with the real driver.
std::atomic<bool> g_forked_child{false};

void after_fork_in_child() {
  if (g_initialised.load()) g_forked_child.store(true);
}

// Registered when the library loads, before anything can initialise.
[[maybe_unused]] const int g_atfork = ::pthread_atfork(nullptr, nullptr, after_fork_in_child);

thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;

// Total emulated memory per device: what cudaGetDeviceProperties reports
// and cudaMalloc refuses beyond.
constexpr size_t kDeviceMemory = size_t{80} << 30;
// CUDA allocations are at least 256-byte aligned.
constexpr size_t kAlign = 256;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace
}  // namespace synk_emu

using namespace synk_emu;

// ---- the objects behind CUDA's opaque handles ----------------------------------------

struct Capture;

// A point in one stream's order: the record of an event, or where an
// implicit (legacy-stream) wait must reach. Done when the stream has
// completed `seq` operations; `ns` is when a record operation ran.
struct Mark {
  std::shared_ptr<CUstream_st> stream;
  uint64_t seq = 0;
  std::atomic<int64_t> ns{0};
};

struct Op {
  enum Kind { Work, Record, Wait } kind = Work;
  std::function<void()> fn;  // Work
  const char* what = "";
  // Work that reads no host memory (device copies, device memsets): it may
  // run while earlier device-to-host copies still hold their results back.
  bool device_only = false;
  std::shared_ptr<Mark> mark;  // Record: the mark it completes; Wait: the mark it waits for
};

// A device-to-host copy's result, held back until a synchronisation.
struct HostWrite {
  uint64_t seq;
  void* dst;
  std::vector<unsigned char> bytes;
};

struct CUstream_st {
  int device = 0;
  unsigned flags = 0;
  bool legacy = false;

  std::mutex mu;  // the queue
  std::condition_variable cv;
  std::deque<Op> queue;
  uint64_t enqueued = 0;  // operations ever queued (sequence numbers 1..enqueued)
  bool closing = false;
  std::atomic<uint64_t> completed{0};

  std::mutex pending_mu;
  std::vector<HostWrite> pending;

  std::shared_ptr<Capture> capture;  // guarded by the global mutex

  bool blocking() const { return !legacy && !(flags & cudaStreamNonBlocking); }
};

struct Capture {
  std::shared_ptr<CUstream_st> origin;
  std::thread::id thread;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::vector<Op> ops;  // in recording order: a valid order for every dependency
  cudaError_t invalid = cudaSuccess;
  std::vector<std::shared_ptr<CUstream_st>> members;  // origin and joined streams
  bool active = true;
};

struct CUevent_st {
  unsigned flags = 0;
  std::shared_ptr<Mark> mark;       // the latest record outside a capture
  std::weak_ptr<Capture> captured;  // the capture the latest record was in
  bool last_in_capture = false;
};

struct CUgraph_st {
  std::vector<Op> ops;
};

struct CUgraphExec_st {
  std::vector<Op> ops;
};

namespace synk_emu {
namespace {

// ---- the registry --------------------------------------------------------------------

struct Region {
  size_t bytes;
  int device;
};

struct Global {
  std::mutex mu;  // streams, events, graphs, captures
  int devices = 0;
  std::unordered_map<CUstream_st*, std::shared_ptr<CUstream_st>> streams;
  std::vector<std::shared_ptr<CUstream_st>> legacy;  // per device, made on first use
  std::unordered_set<CUevent_st*> events;
  std::unordered_set<CUgraph_st*> graphs;
  std::unordered_set<CUgraphExec_st*> execs;
  std::vector<std::shared_ptr<Capture>> captures;  // active ones
  std::vector<std::unique_ptr<std::atomic<int>>> sticky;  // per device: a failed operation's error

  std::shared_mutex mem_mu;  // the two tables below
  std::map<uintptr_t, Region> device_mem;
  std::map<uintptr_t, Region> registered;
  std::vector<size_t> used;
};

// Never destroyed: stream threads may still run while the process exits.
Global& G() {
  static Global* g = new Global;
  return *g;
}

thread_local struct {
  CUstream_st* stream = nullptr;
  uint64_t seq = 0;
} t_exec;  // the operation a stream thread is running

cudaError_t fail(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

// Every call that needs CUDA state starts here.
cudaError_t enter() {
  if (g_forked_child.load(std::memory_order_relaxed)) return cudaErrorInitializationError;
  if (!g_initialised.load(std::memory_order_acquire)) {
    Global& g = G();
    std::lock_guard lk(g.mu);
    if (!g_initialised.load()) {
      int n = 2;
      if (const char* s = std::getenv("SYNK_EMU_DEVICES"); s && *s) n = std::max(0, std::atoi(s));
      g.devices = n;
      g.legacy.resize(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) g.sticky.push_back(std::make_unique<std::atomic<int>>(cudaSuccess));
      g.used.assign(static_cast<size_t>(n), 0);
      g_initialised.store(true, std::memory_order_release);
    }
  }
  if (G().devices == 0) return cudaErrorNoDevice;
  return cudaSuccess;
}

#define EMU_ENTER()                                      \
  do {                                                   \
    if (const cudaError_t e_ = enter(); e_ != cudaSuccess) \
      return fail(e_);                                   \
  } while (0)

cudaError_t sticky(int device) {
  Global& g = G();
  if (device < 0 || device >= g.devices) return cudaSuccess;
  return static_cast<cudaError_t>(g.sticky[static_cast<size_t>(device)]->load());
}

// ---- deferred host writes ------------------------------------------------------------

// Makes the held-back host writes of `s` up to operation `upto` visible.
void publish(CUstream_st* s, uint64_t upto) {
  std::lock_guard lk(s->pending_mu);
  size_t i = 0;
  for (; i < s->pending.size() && s->pending[i].seq <= upto; ++i)
    std::memcpy(s->pending[i].dst, s->pending[i].bytes.data(), s->pending[i].bytes.size());
  s->pending.erase(s->pending.begin(), s->pending.begin() + static_cast<ptrdiff_t>(i));
}

// A device-to-host copy's write, from inside a stream operation.
void write_host(void* dst, const void* src, size_t n) {
  if (!t_exec.stream) {
    std::memcpy(dst, src, n);
    return;
  }
  const auto* p = static_cast<const unsigned char*>(src);
  std::lock_guard lk(t_exec.stream->pending_mu);
  t_exec.stream->pending.push_back({t_exec.seq, dst, std::vector<unsigned char>(p, p + n)});
}

void wait_done(CUstream_st* s, uint64_t seq) {
  for (uint64_t c = s->completed.load(); c < seq; c = s->completed.load()) s->completed.wait(c);
}

// ---- stream threads ------------------------------------------------------------------

void run_op(CUstream_st* s, Op& op) {
  switch (op.kind) {
    case Op::Record: op.mark->ns.store(now_ns()); break;
    case Op::Wait:
      wait_done(op.mark->stream.get(), op.mark->seq);
      publish(op.mark->stream.get(), op.mark->seq);
      break;
    case Op::Work:
      if (!op.device_only) publish(s, UINT64_MAX);
      if (sticky(s->device) != cudaSuccess) break;  // a failed device runs nothing more
      try {
        op.fn();
      } catch (const synk_emu::Fault& f) {  // its message is on stderr already
        G().sticky[static_cast<size_t>(s->device)]->store(f.error);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "synk cuda emulation: %s on device %d failed: %s\n", op.what, s->device, e.what());
        G().sticky[static_cast<size_t>(s->device)]->store(cudaErrorLaunchFailure);
      } catch (...) {
        std::fprintf(stderr, "synk cuda emulation: %s on device %d failed\n", op.what, s->device);
        G().sticky[static_cast<size_t>(s->device)]->store(cudaErrorLaunchFailure);
      }
      break;
  }
}

void stream_thread(std::shared_ptr<CUstream_st> s) {
  t_device = s->device;
  for (;;) {
    Op op;
    {
      std::unique_lock lk(s->mu);
      s->cv.wait(lk, [&] { return !s->queue.empty() || s->closing; });
      if (s->queue.empty()) break;
      op = std::move(s->queue.front());
      s->queue.pop_front();
    }
    t_exec.stream = s.get();
    t_exec.seq = s->completed.load() + 1;
    run_op(s.get(), op);
    t_exec.stream = nullptr;
    s->completed.fetch_add(1);
    s->completed.notify_all();
  }
  publish(s.get(), UINT64_MAX);  // destroyed: its copies land eventually, as on a GPU
}

// The emulation's threads (a thread per stream) must not cost the process
// address space a GPU would not: glibc gives every thread that allocates
// an arena of its own, 64 MiB of address space reserved, which a process
// near its RLIMIT_AS (the fault matrix's out-of-memory cases lower it for
// good) cannot afford. One arena for the whole process (emulated builds
// only; this library is never in a user's program).
__attribute__((constructor)) void one_malloc_arena() { mallopt(M_ARENA_MAX, 1); }

// A stream's thread, detached, on a 1 MiB stack instead of the default 8:
// a GPU's streams cost the process no address space, so a process near its
// RLIMIT_AS (the fault matrix's out-of-memory cases lower it for good) must
// still be able to make streams. Kernel code runs on it (barrier kernels
// on fiber stacks of their own) and so does OpenBLAS's single-threaded
// sgemm, which needs far less.
void start_stream_thread(std::shared_ptr<CUstream_st> s) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, size_t{1} << 20);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  auto* arg = new std::shared_ptr<CUstream_st>(std::move(s));
  pthread_t t;
  const int rc = pthread_create(
      &t, &attr,
      [](void* p) -> void* {
        std::unique_ptr<std::shared_ptr<CUstream_st>> own(static_cast<std::shared_ptr<CUstream_st>*>(p));
        stream_thread(std::move(*own));
        return nullptr;
      },
      arg);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    delete arg;
    throw std::system_error(rc, std::generic_category(), "synk cuda emulation: a stream's thread");
  }
}

std::shared_ptr<CUstream_st> make_stream(int device, unsigned flags, bool legacy) {
  auto s = std::make_shared<CUstream_st>();
  s->device = device;
  s->flags = flags;
  s->legacy = legacy;
  start_stream_thread(s);
  return s;
}

// The stream a handle names (0 and cudaStreamLegacy: the current device's
// legacy default stream), or null. Caller holds G().mu.
std::shared_ptr<CUstream_st> resolve_locked(cudaStream_t h) {
  Global& g = G();
  if (h == nullptr || h == cudaStreamLegacy || h == cudaStreamPerThread) {
    auto& l = g.legacy[static_cast<size_t>(t_device)];
    if (!l) l = make_stream(t_device, 0, true);
    return l;
  }
  auto it = g.streams.find(h);
  return it == g.streams.end() ? nullptr : it->second;
}

std::shared_ptr<CUstream_st> resolve(cudaStream_t h) {
  std::lock_guard lk(G().mu);
  return resolve_locked(h);
}

void invalidate(Capture& c, cudaError_t why) {
  if (c.invalid == cudaSuccess) c.invalid = why;
}

// Pushes `ops` onto the stream in one piece (or records them while it
// captures), adding the legacy default stream's implicit ordering with the
// device's blocking streams. Returns the last operation's sequence number
// (0 when recorded). Caller holds G().mu.
cudaError_t submit_locked(CUstream_st* s, std::vector<Op> ops, uint64_t* seq = nullptr) {
  Global& g = G();
  if (seq) *seq = 0;
  if (s->capture) {
    if (s->capture->invalid != cudaSuccess) return cudaErrorStreamCaptureInvalidated;
    for (Op& op : ops)
      if (op.kind == Op::Work) s->capture->ops.push_back(std::move(op));
    return cudaSuccess;
  }
  std::vector<Op> before;
  auto wait_for = [&](const std::shared_ptr<CUstream_st>& other) {
    std::lock_guard lk(other->mu);
    if (other->enqueued > other->completed.load()) {
      auto m = std::make_shared<Mark>();
      m->stream = other;
      m->seq = other->enqueued;
      Op w;
      w.kind = Op::Wait;
      w.mark = std::move(m);
      before.push_back(std::move(w));
    }
  };
  if (s->legacy) {
    // Work on the legacy stream waits for the device's blocking streams;
    // while one of them captures, that is an implicit dependency on it.
    bool implicit = false;
    for (auto& c : g.captures)
      for (auto& m : c->members)
        if (m->device == s->device && m->blocking()) {
          invalidate(*c, cudaErrorStreamCaptureImplicit);
          implicit = true;
        }
    if (implicit) return cudaErrorStreamCaptureImplicit;
    for (auto& [h, other] : g.streams)
      if (other->device == s->device && other->blocking()) wait_for(other);
  } else if (s->blocking()) {
    if (auto& l = g.legacy[static_cast<size_t>(s->device)]) wait_for(l);
  }
  {
    std::lock_guard lk(s->mu);
    for (Op& op : before) s->queue.push_back(std::move(op));
    for (Op& op : ops) s->queue.push_back(std::move(op));
    s->enqueued += before.size() + ops.size();
    if (seq) *seq = s->enqueued;
  }
  s->cv.notify_one();
  return cudaSuccess;
}

cudaError_t submit(CUstream_st* s, std::vector<Op> ops, uint64_t* seq = nullptr) {
  std::lock_guard lk(G().mu);
  return submit_locked(s, std::move(ops), seq);
}

Op work(std::function<void()> fn, const char* what, bool device_only) {
  Op op;
  op.fn = std::move(fn);
  op.what = what;
  op.device_only = device_only;
  return op;
}

// Waits until `s` has run everything queued so far and makes its held-back
// host writes visible.
void drain(CUstream_st* s) {
  uint64_t target;
  {
    std::lock_guard lk(s->mu);
    target = s->enqueued;
  }
  wait_done(s, target);
  publish(s, target);
}

// The unsafe calls during capture (cudaMalloc, cudaFree, synchronous copies,
// cudaDeviceSynchronize, host registration): refused, and the capture they
// would break invalidated, where CUDA's capture mode prohibits them: from
// the capturing thread (ThreadLocal, Global) or from any thread (Global).
cudaError_t check_unsafe() {
  Global& g = G();
  std::lock_guard lk(g.mu);
  bool hit = false;
  for (auto& c : g.captures)
    if (c->mode == cudaStreamCaptureModeGlobal ||
        (c->mode == cudaStreamCaptureModeThreadLocal && c->thread == std::this_thread::get_id())) {
      invalidate(*c, cudaErrorStreamCaptureUnsupported);
      hit = true;
    }
  return hit ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

// ---- memory tables -------------------------------------------------------------------

enum class Mem { Host, Device, Registered, Bad };

// What [p, p + n) is: inside one device allocation, inside one registered
// host range, plain host memory, or partly inside one of them (Bad).
Mem classify(const void* p, size_t n, int* device = nullptr) {
  Global& g = G();
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::shared_lock lk(g.mem_mu);
  for (auto* table : {&g.device_mem, &g.registered}) {
    auto it = table->upper_bound(a);
    if (it == table->begin()) continue;
    --it;
    if (a >= it->first + it->second.bytes) continue;
    if (n > it->first + it->second.bytes - a) return Mem::Bad;
    if (device) *device = it->second.device;
    return table == &g.device_mem ? Mem::Device : Mem::Registered;
  }
  // A host range must not run into an allocation either.
  if (n > 0) {
    auto it = g.device_mem.upper_bound(a);
    if (it != g.device_mem.end() && it->first < a + n) return Mem::Bad;
    it = g.registered.upper_bound(a);
    if (it != g.registered.end() && it->first < a + n) return Mem::Bad;
  }
  return Mem::Host;
}

bool accessible(Mem m) { return m == Mem::Device || m == Mem::Registered; }

// Copies `rows` rows of `width` bytes; both sides checked by the caller.
void copy_rows(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows, bool to_host) {
  for (size_t r = 0; r < rows; ++r) {
    void* d = static_cast<unsigned char*>(dst) + r * dpitch;
    const void* s = static_cast<const unsigned char*>(src) + r * spitch;
    if (to_host)
      write_host(d, s, width);
    else
      std::memcpy(d, s, width);
  }
}

// Checks a 2D copy's operands against its kind; says which side is host
// memory. cudaErrorInvalidValue for a kind the pointers contradict.
cudaError_t check_copy(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows,
                       cudaMemcpyKind kind, Mem* dm, Mem* sm) {
  if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
  const size_t dext = rows ? dpitch * (rows - 1) + width : 0, sext = rows ? spitch * (rows - 1) + width : 0;
  *dm = classify(dst, dext);
  *sm = classify(src, sext);
  if (*dm == Mem::Bad || *sm == Mem::Bad) return cudaErrorInvalidValue;
  if (dext && !dst) return cudaErrorInvalidValue;
  if (sext && !src) return cudaErrorInvalidValue;
  switch (kind) {
    case cudaMemcpyHostToHost:
      if (*dm == Mem::Device || *sm == Mem::Device) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyHostToDevice:
      if (!accessible(*dm) || *sm == Mem::Device) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDeviceToHost:
      if (!accessible(*sm) || *dm == Mem::Device) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDeviceToDevice:
      if (!accessible(*dm) || !accessible(*sm)) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDefault: break;
    default: return cudaErrorInvalidMemcpyDirection;
  }
  return cudaSuccess;
}

// The stream operation of a checked copy: reads host memory when the stream
// runs it (after earlier held-back writes landed), holds back host writes.
Op copy_op(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows, Mem dm, Mem sm) {
  const bool to_host = dm != Mem::Device && sm == Mem::Device;
  return work([=] { copy_rows(dst, dpitch, src, spitch, width, rows, to_host); }, "cudaMemcpy", sm == Mem::Device);
}

cudaError_t memcpy_async(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows,
                         cudaMemcpyKind kind, cudaStream_t stream) {
  EMU_ENTER();
  Mem dm, sm;
  if (const cudaError_t e = check_copy(dst, dpitch, src, spitch, width, rows, kind, &dm, &sm); e != cudaSuccess)
    return fail(e);
  std::lock_guard lk(G().mu);
  auto s = resolve_locked(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = sticky(s->device); e != cudaSuccess) return fail(e);
  if (width == 0 || rows == 0) return cudaSuccess;
  return fail(submit_locked(s.get(), {copy_op(dst, dpitch, src, spitch, width, rows, dm, sm)}));
}

cudaError_t memset_async(void* dst, size_t pitch, int value, size_t width, size_t rows, cudaStream_t stream) {
  EMU_ENTER();
  if (width > pitch) return fail(cudaErrorInvalidPitchValue);
  const size_t ext = rows ? pitch * (rows - 1) + width : 0;
  const Mem m = classify(dst, ext);
  if (ext && !accessible(m)) return fail(cudaErrorInvalidValue);
  std::lock_guard lk(G().mu);
  auto s = resolve_locked(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = sticky(s->device); e != cudaSuccess) return fail(e);
  if (ext == 0) return cudaSuccess;
  auto fn = [=] {
    for (size_t r = 0; r < rows; ++r) std::memset(static_cast<unsigned char*>(dst) + r * pitch, value, width);
  };
  return fail(submit_locked(s.get(), {work(fn, "cudaMemset", m == Mem::Device)}));
}

cudaError_t valid_device(int d) {
  return d >= 0 && d < G().devices ? cudaSuccess : cudaErrorInvalidDevice;
}

}  // namespace

// ---- emu.hpp -------------------------------------------------------------------------

cudaError_t enqueue(cudaStream_t stream, std::function<void()> fn, const char* what) {
  EMU_ENTER();
  std::lock_guard lk(G().mu);
  auto s = resolve_locked(stream);
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = sticky(s->device); e != cudaSuccess) return fail(e);
  return fail(submit_locked(s.get(), {work(std::move(fn), what, false)}));
}

int current_device() { return t_device; }

int stream_device(cudaStream_t stream) {
  if (enter() != cudaSuccess) return -1;
  auto s = resolve(stream);
  return s ? s->device : -1;
}

bool device_accessible(const void* p, size_t bytes) {
  if (!p) return false;
  return accessible(classify(p, bytes));
}

void set_last_error(cudaError_t e) { fail(e); }

}  // namespace synk_emu

// ---- the CUDA runtime API ------------------------------------------------------------

extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) { return t_last_error; }

cudaError_t cudaDriverGetVersion(int* v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}

// ---- devices -------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 0;
  EMU_ENTER();
  *count = G().devices;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  EMU_ENTER();
  *device = t_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  EMU_ENTER();
  if (const cudaError_t e = valid_device(device); e != cudaSuccess) return fail(e);
  t_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (!p) return fail(cudaErrorInvalidValue);
  EMU_ENTER();
  if (const cudaError_t e = valid_device(device); e != cudaSuccess) return fail(e);
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "synk emulated GPU");
  p->uuid.bytes[0] = static_cast<char>(device + 1);
  p->totalGlobalMem = kDeviceMemory;
  p->sharedMemPerBlock = 48 << 10;
  p->sharedMemPerBlockOptin = 227 << 10;
  p->sharedMemPerMultiprocessor = 228 << 10;
  p->regsPerBlock = p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->memPitch = SIZE_MAX;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->totalConstMem = 64 << 10;
  p->major = 9;
  p->minor = 0;
  p->textureAlignment = 512;
  p->texturePitchAlignment = 32;
  p->multiProcessorCount = 132;
  p->maxThreadsPerMultiProcessor = 2048;
  p->maxBlocksPerMultiProcessor = 32;
  p->canMapHostMemory = 1;
  p->concurrentKernels = 1;
  p->pciBusID = device + 1;
  p->asyncEngineCount = 2;
  p->unifiedAddressing = 1;
  p->memoryBusWidth = 5120;
  p->l2CacheSize = 50 << 20;
  p->streamPrioritiesSupported = 1;
  p->managedMemory = 1;
  p->cooperativeLaunch = 1;
  p->hostRegisterSupported = 1;
  p->memoryPoolsSupported = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  EMU_ENTER();
  if (const cudaError_t e = check_unsafe(); e != cudaSuccess) return fail(e);
  std::vector<std::shared_ptr<CUstream_st>> all;
  {
    std::lock_guard lk(G().mu);
    for (auto& [h, s] : G().streams)
      if (s->device == t_device) all.push_back(s);
    if (auto& l = G().legacy[static_cast<size_t>(t_device)]) all.push_back(l);
  }
  for (auto& s : all) drain(s.get());
  return fail(sticky(t_device));
}

// ---- memory --------------------------------------------------------------------------

cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  EMU_ENTER();
  if (const cudaError_t e = check_unsafe(); e != cudaSuccess) return fail(e);
  if (const cudaError_t e = sticky(t_device); e != cudaSuccess) return fail(e);
  if (bytes == 0) return cudaSuccess;
  Global& g = G();
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  {
    std::lock_guard lk(g.mem_mu);
    if (rounded > kDeviceMemory - g.used[static_cast<size_t>(t_device)]) return fail(cudaErrorMemoryAllocation);
    g.used[static_cast<size_t>(t_device)] += rounded;
  }
  void* q = std::aligned_alloc(kAlign, rounded);
  if (!q) {
    std::lock_guard lk(g.mem_mu);
    g.used[static_cast<size_t>(t_device)] -= rounded;
    return fail(cudaErrorMemoryAllocation);
  }
  std::memset(q, 0xff, rounded);  // 0xffffffff is a NaN: uninitialised reads show
  {
    std::lock_guard lk(g.mem_mu);
    g.device_mem[reinterpret_cast<uintptr_t>(q)] = Region{bytes, t_device};
  }
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  EMU_ENTER();
  if (const cudaError_t e = check_unsafe(); e != cudaSuccess) return fail(e);
  if (!p) return cudaSuccess;
  Global& g = G();
  int device;
  {
    std::shared_lock lk(g.mem_mu);
    auto it = g.device_mem.find(reinterpret_cast<uintptr_t>(p));
    if (it == g.device_mem.end()) return fail(cudaErrorInvalidValue);
    device = it->second.device;
  }
  // cudaFree synchronises the device: queued work may still use the memory.
  std::vector<std::shared_ptr<CUstream_st>> all;
  {
    std::lock_guard lk(g.mu);
    for (auto& [h, s] : g.streams)
      if (s->device == device) all.push_back(s);
    if (auto& l = g.legacy[static_cast<size_t>(device)]) all.push_back(l);
  }
  for (auto& s : all) drain(s.get());
  {
    std::lock_guard lk(g.mem_mu);
    auto it = g.device_mem.find(reinterpret_cast<uintptr_t>(p));
    if (it == g.device_mem.end()) return fail(cudaErrorInvalidValue);  // freed meanwhile by another thread
    g.used[static_cast<size_t>(device)] -= (it->second.bytes + kAlign - 1) / kAlign * kAlign;
    g.device_mem.erase(it);
  }
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  if (!a) return fail(cudaErrorInvalidValue);
  EMU_ENTER();
  *a = cudaPointerAttributes{};
  int device = -1;
  switch (classify(p, 1, &device)) {
    case Mem::Device:
      a->type = cudaMemoryTypeDevice;
      a->device = device;
      a->devicePointer = const_cast<void*>(p);
      break;
    case Mem::Registered:
      a->type = cudaMemoryTypeHost;
      a->device = t_device;
      a->devicePointer = a->hostPointer = const_cast<void*>(p);
      break;
    default:
      a->type = cudaMemoryTypeUnregistered;
      a->device = cudaInvalidDeviceId;
      break;
  }
  return cudaSuccess;
}

cudaError_t cudaHostRegister(void* p, size_t bytes, unsigned int flags) {
  EMU_ENTER();
  if (const cudaError_t e = check_unsafe(); e != cudaSuccess) return fail(e);
  if (!p || bytes == 0) return fail(cudaErrorInvalidValue);
  Global& g = G();
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard lk(g.mem_mu);
  auto overlaps = [&](const std::map<uintptr_t, Region>& t) {
    auto it = t.upper_bound(a);
    if (it != t.end() && it->first < a + bytes) return true;
    return it != t.begin() && std::prev(it)->first + std::prev(it)->second.bytes > a;
  };
  if (overlaps(g.registered)) return fail(cudaErrorHostMemoryAlreadyRegistered);
  if (overlaps(g.device_mem)) return fail(cudaErrorInvalidValue);
  g.registered[a] = Region{bytes, t_device};
  return cudaSuccess;
}

cudaError_t cudaHostUnregister(void* p) {
  EMU_ENTER();
  if (const cudaError_t e = check_unsafe(); e != cudaSuccess) return fail(e);
  Global& g = G();
  std::lock_guard lk(g.mem_mu);
  if (g.registered.erase(reinterpret_cast<uintptr_t>(p)) == 0) return fail(cudaErrorHostMemoryNotRegistered);
  return cudaSuccess;
}

// ---- copies and memsets --------------------------------------------------------------

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t stream) {
  return memcpy_async(dst, n, src, n, n, 1, kind, stream);
}

cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind kind, cudaStream_t stream) {
  return memcpy_async(dst, dpitch, src, spitch, width, height, kind, stream);
}

// On the legacy default stream, host-synchronous as CUDA documents it: from
// pageable memory it returns once the source is staged (the copy may not
// have landed), device to device it does not wait, every other direction
// waits for the copy.
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  EMU_ENTER();
  if (const cudaError_t e = check_unsafe(); e != cudaSuccess) return fail(e);
  Mem dm, sm;
  if (const cudaError_t e = check_copy(dst, n, src, n, n, 1, kind, &dm, &sm); e != cudaSuccess) return fail(e);
  if (const cudaError_t e = sticky(t_device); e != cudaSuccess) return fail(e);
  if (n == 0) return cudaSuccess;
  auto s = resolve(nullptr);
  Op op;
  bool wait = true;
  if (sm == Mem::Host && dm == Mem::Device) {
    auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                               static_cast<const unsigned char*>(src) + n);
    op = work([=] { std::memcpy(dst, staged->data(), n); }, "cudaMemcpy", true);
    wait = false;
  } else {
    op = copy_op(dst, n, src, n, n, 1, dm, sm);
    wait = !(sm == Mem::Device && dm == Mem::Device);
  }
  uint64_t seq = 0;
  if (const cudaError_t e = submit(s.get(), {std::move(op)}, &seq); e != cudaSuccess) return fail(e);
  if (wait) {
    wait_done(s.get(), seq);
    publish(s.get(), seq);
  }
  return fail(sticky(t_device));
}

// CUDA: asynchronous with respect to the host (device memory), on the
// legacy default stream.
cudaError_t cudaMemset(void* dst, int value, size_t n) { return memset_async(dst, n, value, n, 1, nullptr); }

cudaError_t cudaMemsetAsync(void* dst, int value, size_t n, cudaStream_t stream) {
  return memset_async(dst, n, value, n, 1, stream);
}

cudaError_t cudaMemset2DAsync(void* dst, size_t pitch, int value, size_t width, size_t height, cudaStream_t stream) {
  return memset_async(dst, pitch, value, width, height, stream);
}

// ---- streams -------------------------------------------------------------------------

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* out, unsigned int flags) {
  if (!out) return fail(cudaErrorInvalidValue);
  EMU_ENTER();
  if (flags & ~static_cast<unsigned>(cudaStreamNonBlocking)) return fail(cudaErrorInvalidValue);
  auto s = make_stream(t_device, flags, false);
  std::lock_guard lk(G().mu);
  G().streams[s.get()] = s;
  *out = s.get();
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* out) { return cudaStreamCreateWithFlags(out, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t h) {
  EMU_ENTER();
  std::shared_ptr<CUstream_st> s;
  {
    std::lock_guard lk(G().mu);
    auto it = G().streams.find(h);
    if (it == G().streams.end()) return fail(cudaErrorInvalidResourceHandle);
    s = it->second;
    G().streams.erase(it);
    if (s->capture) invalidate(*s->capture, cudaErrorStreamCaptureInvalidated);
  }
  // Queued work still runs, as on a GPU; the thread then ends.
  {
    std::lock_guard lk(s->mu);
    s->closing = true;
  }
  s->cv.notify_one();
  return cudaSuccess;
}

namespace {
// The stream a host wait (synchronize, query) names. A host wait on a
// capturing stream is refused and invalidates the capture, as the driver
// does.
cudaError_t host_wait_stream_locked(cudaStream_t h, std::shared_ptr<CUstream_st>& s) {
  s = resolve_locked(h);
  if (!s) return cudaErrorInvalidResourceHandle;
  if (s->capture) {
    invalidate(*s->capture, cudaErrorStreamCaptureUnsupported);
    return cudaErrorStreamCaptureUnsupported;
  }
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaStreamSynchronize(cudaStream_t h) {
  EMU_ENTER();
  std::shared_ptr<CUstream_st> s;
  {
    std::lock_guard lk(G().mu);
    if (const cudaError_t e = host_wait_stream_locked(h, s); e != cudaSuccess) return fail(e);
    // The legacy stream also waits for the device's blocking streams.
    if (s->legacy)
      if (const cudaError_t e = submit_locked(s.get(), {work([] {}, "synchronize", true)}); e != cudaSuccess)
        return fail(e);
  }
  drain(s.get());
  return fail(sticky(s->device));
}

cudaError_t cudaStreamQuery(cudaStream_t h) {
  EMU_ENTER();
  std::shared_ptr<CUstream_st> s;
  {
    std::lock_guard lk(G().mu);
    if (const cudaError_t e = host_wait_stream_locked(h, s); e != cudaSuccess) return fail(e);
  }
  uint64_t target;
  {
    std::lock_guard lk(s->mu);
    target = s->enqueued;
  }
  if (s->completed.load() < target) return cudaErrorNotReady;  // not an error: the last error stays
  publish(s.get(), target);
  return fail(sticky(s->device));
}

cudaError_t cudaStreamWaitEvent(cudaStream_t h, cudaEvent_t e, unsigned int flags) {
  EMU_ENTER();
  Global& g = G();
  std::lock_guard lk(g.mu);
  auto s = resolve_locked(h);
  if (!s || !g.events.count(e)) return fail(cudaErrorInvalidResourceHandle);
  if (e->last_in_capture) {
    auto cap = e->captured.lock();
    if (!cap || !cap->active) return fail(cudaErrorStreamCaptureIsolation);
    if (s->capture == cap) return cudaSuccess;  // recording order already orders it
    if (s->capture) {
      invalidate(*s->capture, cudaErrorStreamCaptureMerge);
      return fail(cudaErrorStreamCaptureMerge);
    }
    if (s->legacy) {
      invalidate(*cap, cudaErrorStreamCaptureImplicit);
      return fail(cudaErrorStreamCaptureImplicit);
    }
    // The stream joins the capture: its work from now on is recorded.
    s->capture = cap;
    cap->members.push_back(s);
    return cudaSuccess;
  }
  if (s->capture) {
    // A capture may not depend on work outside it.
    if (!e->mark) return cudaSuccess;
    invalidate(*s->capture, cudaErrorStreamCaptureIsolation);
    return fail(cudaErrorStreamCaptureIsolation);
  }
  if (!e->mark) return cudaSuccess;  // never recorded: nothing to wait for
  Op w;
  w.kind = Op::Wait;
  w.mark = e->mark;
  return fail(submit_locked(s.get(), {std::move(w)}));
}

// ---- events --------------------------------------------------------------------------

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* out, unsigned int flags) {
  if (!out) return fail(cudaErrorInvalidValue);
  EMU_ENTER();
  const unsigned known = cudaEventBlockingSync | cudaEventDisableTiming | cudaEventInterprocess;
  if (flags & ~known) return fail(cudaErrorInvalidValue);
  // Interprocess events need DisableTiming in CUDA.
  if ((flags & cudaEventInterprocess) && !(flags & cudaEventDisableTiming)) return fail(cudaErrorInvalidValue);
  auto* e = new CUevent_st;
  e->flags = flags;
  std::lock_guard lk(G().mu);
  G().events.insert(e);
  *out = e;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* out) { return cudaEventCreateWithFlags(out, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  EMU_ENTER();
  std::lock_guard lk(G().mu);
  if (G().events.erase(e) == 0) return fail(cudaErrorInvalidResourceHandle);
  delete e;  // queued waits hold the record's mark, not the event
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t h) {
  EMU_ENTER();
  Global& g = G();
  std::lock_guard lk(g.mu);
  auto s = resolve_locked(h);
  if (!s || !g.events.count(e)) return fail(cudaErrorInvalidResourceHandle);
  if (s->capture) {
    // In a capture a record only marks a point other streams may join at.
    if (s->capture->invalid != cudaSuccess) return fail(cudaErrorStreamCaptureInvalidated);
    e->mark.reset();
    e->captured = s->capture;
    e->last_in_capture = true;
    return cudaSuccess;
  }
  auto m = std::make_shared<Mark>();
  m->stream = s;
  Op r;
  r.kind = Op::Record;
  r.mark = m;
  uint64_t seq = 0;
  if (const cudaError_t err = submit_locked(s.get(), {std::move(r)}, &seq); err != cudaSuccess) return fail(err);
  m->seq = seq;
  e->mark = std::move(m);
  e->captured.reset();
  e->last_in_capture = false;
  return cudaSuccess;
}

namespace {
// The event's latest record, or an error; caller holds G().mu.
cudaError_t event_mark(cudaEvent_t e, std::shared_ptr<Mark>* m) {
  if (!G().events.count(e)) return cudaErrorInvalidResourceHandle;
  if (e->last_in_capture) return cudaErrorCapturedEvent;
  *m = e->mark;
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaEventQuery(cudaEvent_t e) {
  EMU_ENTER();
  std::shared_ptr<Mark> m;
  {
    std::lock_guard lk(G().mu);
    if (const cudaError_t err = event_mark(e, &m); err != cudaSuccess) return fail(err);
  }
  if (!m) return cudaSuccess;  // never recorded: CUDA reports it complete
  if (m->stream->completed.load() < m->seq) return cudaErrorNotReady;  // not an error: the last error stays
  publish(m->stream.get(), m->seq);
  return fail(sticky(m->stream->device));
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  EMU_ENTER();
  std::shared_ptr<Mark> m;
  {
    std::lock_guard lk(G().mu);
    if (const cudaError_t err = event_mark(e, &m); err != cudaSuccess) return fail(err);
  }
  if (!m) return cudaSuccess;
  wait_done(m->stream.get(), m->seq);
  publish(m->stream.get(), m->seq);
  return fail(sticky(m->stream->device));
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return fail(cudaErrorInvalidValue);
  EMU_ENTER();
  std::shared_ptr<Mark> a, b;
  {
    std::lock_guard lk(G().mu);
    if (const cudaError_t err = event_mark(start, &a); err != cudaSuccess) return fail(err);
    if (const cudaError_t err = event_mark(end, &b); err != cudaSuccess) return fail(err);
    if ((start->flags | end->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
  }
  if (!a || !b) return fail(cudaErrorInvalidResourceHandle);
  if (a->stream->completed.load() < a->seq || b->stream->completed.load() < b->seq) return fail(cudaErrorNotReady);
  *ms = static_cast<float>(static_cast<double>(b->ns.load() - a->ns.load()) / 1e6);
  return cudaSuccess;
}

// ---- stream capture and graphs -------------------------------------------------------

cudaError_t cudaStreamBeginCapture(cudaStream_t h, cudaStreamCaptureMode mode) {
  EMU_ENTER();
  Global& g = G();
  std::lock_guard lk(g.mu);
  auto s = resolve_locked(h);
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  if (s->legacy) return fail(cudaErrorStreamCaptureUnsupported);
  if (s->capture) return fail(cudaErrorIllegalState);
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorInvalidValue);
  auto c = std::make_shared<Capture>();
  c->origin = s;
  c->thread = std::this_thread::get_id();
  c->mode = mode;
  c->members.push_back(s);
  s->capture = c;
  g.captures.push_back(c);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t h, cudaGraph_t* graph) {
  if (!graph) return fail(cudaErrorInvalidValue);
  *graph = nullptr;
  EMU_ENTER();
  Global& g = G();
  std::lock_guard lk(g.mu);
  auto s = resolve_locked(h);
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  auto c = s->capture;
  if (!c) return fail(cudaErrorIllegalState);
  if (c->origin != s) return fail(cudaErrorStreamCaptureUnmatched);
  if (c->mode != cudaStreamCaptureModeRelaxed && c->thread != std::this_thread::get_id())
    return fail(cudaErrorStreamCaptureWrongThread);
  for (auto& m : c->members) m->capture.reset();
  c->active = false;
  g.captures.erase(std::find(g.captures.begin(), g.captures.end(), c));
  if (c->invalid != cudaSuccess) return fail(cudaErrorStreamCaptureInvalidated);
  auto* gr = new CUgraph_st{std::move(c->ops)};
  g.graphs.insert(gr);
  *graph = gr;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t h, cudaStreamCaptureStatus* status) {
  if (!status) return fail(cudaErrorInvalidValue);
  EMU_ENTER();
  std::lock_guard lk(G().mu);
  auto s = resolve_locked(h);
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  *status = !s->capture ? cudaStreamCaptureStatusNone
            : s->capture->invalid != cudaSuccess ? cudaStreamCaptureStatusInvalidated
                                                 : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  if (!exec) return fail(cudaErrorInvalidValue);
  EMU_ENTER();
  std::lock_guard lk(G().mu);
  if (!G().graphs.count(graph)) return fail(cudaErrorInvalidValue);
  auto* x = new CUgraphExec_st{graph->ops};
  G().execs.insert(x);
  *exec = x;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t h) {
  EMU_ENTER();
  Global& g = G();
  std::lock_guard lk(g.mu);
  if (!g.execs.count(exec)) return fail(cudaErrorInvalidResourceHandle);
  auto s = resolve_locked(h);
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = sticky(s->device); e != cudaSuccess) return fail(e);
  // The recorded work, in recording order, on the launch stream.
  return fail(submit_locked(s.get(), exec->ops));
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  EMU_ENTER();
  std::lock_guard lk(G().mu);
  if (G().graphs.erase(graph) == 0) return fail(cudaErrorInvalidValue);
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  EMU_ENTER();
  std::lock_guard lk(G().mu);
  if (G().execs.erase(exec) == 0) return fail(cudaErrorInvalidValue);
  delete exec;  // launched copies of its work are queued by value
  return cudaSuccess;
}

}  // extern "C"
