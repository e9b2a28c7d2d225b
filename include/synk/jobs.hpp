// synk/jobs.hpp — plain C++ jobs on every rank: map, reduce as results
// arrive, futures, per-rank state, critical and ordered sections, results of
// any size, shared arrays written by jobs, a parallel stable sort and the
// usable CPU count (what Python's multiprocessing.Pool and sharedmem offer).
//
//   synk::Runtime rt = synk::fork();              // SYNK_WORKERS / OMP_NUM_THREADS / cpu_count()
//   std::vector<int> jobs = {1, 2, 3};
//   std::vector<int> sq = rt.map([](const int& x) { return x * x; }, jobs);
//   long total = rt.map_reduce([](const int& x) { return long{x}; }, jobs, 0L,
//                              [](long a, long b) { return a + b; });
//   synk::Future<int> f = rt.apply_async([](const int& x) { return x + 1; }, 41);
//   // ... the master does other work while the workers run the job ...
//   int answer = f.get();                          // 42, or WorkerError
//   std::vector<std::string> s = rt.map(
//       [](synk::JobContext& ctx, const int& x) {
//         ctx.local<int>() += 1;                    // per-rank state (sharedmem's pool.tls)
//         ctx.critical([] { /* one rank at a time */ });
//         ctx.ordered([&] { std::printf("%d\n", x); });   // in job order
//         return std::to_string(x);                 // any type with a synk::Codec
//       }, jobs);
//   synk::Data X = rt.zeros(synk::f32, {3, 4});
//   rt.map([](synk::JobContext& ctx, const synk::DataRef& x) {
//     ctx.rows<float>(x, ctx.job(), 1)[0] = 1.f;   // write row job() of X
//     return 0;
//   }, std::vector<synk::DataRef>(3, X.ref()));
//   std::vector<int64_t> order = rt.argsort(X);   // stable, over every rank
//
// Job functions. A job function is a plain function or a lambda without
// captures (a worker runs its own forked copy of the program, so captured
// state would not travel; pass it in the jobs), called as fn(job) or
// fn(ctx, job) with a JobContext& first. The ranks (the master, rank 0,
// too) take jobs in job-index order as each becomes free, in guided chunks
// (a rank takes a share of what is left, at least one job, so the last
// jobs go one at a time); a job may run on any rank. With one rank
// (SYNK_WORKERS=1) every job runs in the master, where a debugger sees it
// (sharedmem's debug mode).
//
// Jobs and results travel through shared memory as bytes: a trivially
// copyable type (not a pointer) is copied as is; any other type needs a
// synk::Codec<T> specialisation (std::string, std::vector, std::pair,
// std::tuple and std::optional of serialisable types come with synk). Using
// a type that is neither is a compile-time error naming Codec. A result
// larger than its slot goes into a per-rank result space of
// kJobResultSpace bytes per map (virtual; only what is written is used); a
// rank whose results of one map exceed it fails that job (WorkerError).
//
// Errors. An exception thrown by a job is caught on its rank; the other
// jobs still run. map() / map_reduce() then throw WorkerError for the
// lowest failed job index (its rank, and the job's message); a Future's
// get() throws it for its own job only. A rank that dies (or is killed, or
// exits) fails the runtime as everywhere else: the pending call or get()
// throws WorkerError naming it, unless the jobs have retries (map's and
// Runtime::map, and async jobs below). Calling the Runtime from inside a
// job is refused (ArgumentError).
//
// Futures. apply_async() / map_async() queue jobs and return at once; the
// workers start on them while the master carries on. get() waits for its
// job (the master runs queued jobs itself while it waits, until a job with
// retries is queued: from then on that stream's jobs run on the workers
// only). Any other runtime call first finishes every queued job (their
// futures stay readable); close() cancels jobs no rank has started (their
// get() throws ArgumentError). Async jobs are numbered in submission order
// (JobContext::job(), "job i" in messages), which a retry keeps.
//
// Async jobs with retries (apply_async(fn, job, retries), map_async). A
// failure of the runtime (a rank died or hung) counts as one try of every
// unfinished job of the stream. The next get(), wait(), join() or other
// call notices it; if an unfinished job has retries left, that call heals
// the runtime (Runtime::heal: every worker replaced) and queues the
// unfinished jobs with retries left again, under their old indices, and
// goes on. Finished results stay readable. At that failure:
//  - a job with retries left runs again, and its get() gives its result;
//  - a job queued with retries 0 throws the failure, as without retries;
//  - a job with retries > 0 and none left throws WorkerError "Runtime::
//  apply_async failed after 3 tries: job 7 was running on rank 1 when it
//  was lost (the job lost its rank in 3 of 3 tries): <the death>" (map's
//  message), and the runtime is left failed as map leaves it: nothing
//  heals, every other unfinished job throws WorkerError "job 9 was not
//  run again: job 7 failed after 3 tries, ...", and heal() repairs the
//  runtime;
//  - with no job with retries unfinished, nothing heals (as without).
// ready() never heals. A future never got is retried with the others (its
// job runs again; the result is kept for it). get() from another thread
// claims the runtime as every call does (ArgumentError while a call of
// another thread runs) and may be the call that heals. Runtime::heal()
// keeps jobs with retries left too: the next call that touches jobs
// queues them. close() never heals; an unfinished job's get() then throws
// (ArgumentError "never ran", or the runtime's failure if it had failed).
#pragma once

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeindex>
#include <utility>
#include <vector>

#include "synk/data.hpp"
#include "synk/error.hpp"

namespace synk {

class Runtime;
class WorkerError;

// Bytes a rank may write for oversized results (and job errors) per map.
inline constexpr size_t kJobResultSpace = size_t{256} << 20;

// ---- serialisation point ----------------------------------------------------------

class ByteWriter {
 public:
  void write(const void* p, size_t n) {
    if (n == 0) return;
    const size_t at = buf_.size();
    buf_.resize(at + n);
    std::memcpy(buf_.data() + at, p, n);
  }
  template <class T> void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>, "ByteWriter::put: trivially copyable types only");
    write(&v, sizeof(T));
  }
  void clear() { buf_.clear(); }
  const std::vector<uint8_t>& bytes() const { return buf_; }
  std::vector<uint8_t>& bytes() { return buf_; }

 private:
  std::vector<uint8_t> buf_;
};

class ByteReader {
 public:
  ByteReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  const uint8_t* take(size_t k) {
    if (k > n_ - off_) throw FormatError("synk::ByteReader: truncated value (a Codec read more than was written)");
    const uint8_t* at = p_ + off_;
    off_ += k;
    return at;
  }
  template <class T> T get() {
    static_assert(std::is_trivially_copyable_v<T>, "ByteReader::get: trivially copyable types only");
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  size_t left() const { return n_ - off_; }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
};

// Specialise for your own types:
//   template <> struct synk::Codec<Point> {
//     static void write(synk::ByteWriter& w, const Point& p) { ... }
//     static Point read(synk::ByteReader& r) { ... }
//   };
template <class T, class Enable = void> struct Codec;  // undefined: not serialisable

template <class T>
concept Serialisable =
    (std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T>) ||
    requires(ByteWriter& w, ByteReader& r, const T& v) {
      Codec<T>::write(w, v);
      { Codec<T>::read(r) } -> std::convertible_to<T>;
    };

template <class T> void encode_value(ByteWriter& w, const T& v) {
  if constexpr (requires(ByteWriter& ww, const T& vv) { Codec<T>::write(ww, vv); }) Codec<T>::write(w, v);
  else w.put(v);
}
template <class T> T decode_value(ByteReader& r) {
  if constexpr (requires(ByteReader& rr) { Codec<T>::read(rr); }) return Codec<T>::read(r);
  else return r.get<T>();
}

template <> struct Codec<std::string> {
  static void write(ByteWriter& w, const std::string& s) {
    w.put<uint64_t>(s.size());
    w.write(s.data(), s.size());
  }
  static std::string read(ByteReader& r) {
    const uint64_t n = r.get<uint64_t>();
    const uint8_t* p = r.take(n);
    return std::string(reinterpret_cast<const char*>(p), n);
  }
};

template <class T> struct Codec<std::vector<T>, std::enable_if_t<Serialisable<T>>> {
  static void write(ByteWriter& w, const std::vector<T>& v) {
    w.put<uint64_t>(v.size());
    if constexpr (std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>) w.write(v.data(), v.size() * sizeof(T));
    else
      for (const T& x : v) encode_value(w, x);
  }
  static std::vector<T> read(ByteReader& r) {
    const uint64_t n = r.get<uint64_t>();
    std::vector<T> v;
    if constexpr (std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>) {
      if (n > r.left() / (sizeof(T) ? sizeof(T) : 1)) throw FormatError("synk::Codec<vector>: truncated value");
      v.resize(n);
      if (n) std::memcpy(v.data(), r.take(n * sizeof(T)), n * sizeof(T));
    } else {
      for (uint64_t i = 0; i < n; ++i) v.push_back(decode_value<T>(r));
    }
    return v;
  }
};

template <class A, class B>
struct Codec<std::pair<A, B>, std::enable_if_t<Serialisable<A> && Serialisable<B> &&
                                               !std::is_trivially_copyable_v<std::pair<A, B>>>> {
  static void write(ByteWriter& w, const std::pair<A, B>& p) {
    encode_value(w, p.first);
    encode_value(w, p.second);
  }
  static std::pair<A, B> read(ByteReader& r) {
    A a = decode_value<A>(r);
    B b = decode_value<B>(r);
    return {std::move(a), std::move(b)};
  }
};

template <class... T>
struct Codec<std::tuple<T...>, std::enable_if_t<(Serialisable<T> && ...) &&
                                                !std::is_trivially_copyable_v<std::tuple<T...>>>> {
  static void write(ByteWriter& w, const std::tuple<T...>& t) {
    std::apply([&w](const T&... x) { (encode_value(w, x), ...); }, t);
  }
  static std::tuple<T...> read(ByteReader& r) { return std::tuple<T...>{decode_value<T>(r)...}; }
};

template <class T>
struct Codec<std::optional<T>, std::enable_if_t<Serialisable<T> && !std::is_trivially_copyable_v<std::optional<T>>>> {
  static void write(ByteWriter& w, const std::optional<T>& o) {
    w.put<uint8_t>(o ? 1 : 0);
    if (o) encode_value(w, *o);
  }
  static std::optional<T> read(ByteReader& r) {
    if (r.get<uint8_t>() == 0) return std::nullopt;
    return decode_value<T>(r);
  }
};

// ---- shared arrays in jobs -------------------------------------------------------------

// A Data as a job can carry it (Data::ref()): trivially copyable; a job
// turns it into memory with JobContext::rows(). Valid while the Data keeps
// its segment (until it is destroyed, or a set()/resize() replaces it).
struct DataRef {
  uint64_t segment = 0;
  DType dtype = DType::f32;
  int64_t rows = 0;
  int64_t row_elems = 0;  // elements per row (1 for a vector or scalar)
};

namespace detail {
struct JobEnv;
// Per-rank storage of JobContext::local (one object per type per process).
void* rank_local(std::type_index key, void* (*make)(), void (*destroy)(void*));
}  // namespace detail

// What a job sees of where it runs.
class JobContext {
 public:
  int rank() const;   // 0 is the master
  int ranks() const;  // ranks in total
  uint64_t job() const { return job_; }  // index of this job in its map (or in submission order)

  // Storage of this rank that lives from one job to the next (and from one
  // map to the next) until the runtime closes: the first call on a rank
  // default-constructs a T, later calls (any job on that rank) get the same
  // object. One object per type T; use a struct for several values.
  template <class T> T& local() {
    static_assert(std::is_default_constructible_v<T>, "JobContext::local<T>: T must be default-constructible");
    return *static_cast<T*>(detail::rank_local(
        std::type_index(typeid(T)), [] { return static_cast<void*>(new T()); },
        [](void* p) { delete static_cast<T*>(p); }));
  }

  // Runs f() while holding the runtime's one cross-process lock: no other
  // rank is inside a critical section meanwhile. Not re-entrant.
  template <class F> decltype(auto) critical(F&& f) {
    struct Unlock {
      JobContext* c;
      ~Unlock() { c->unlock_critical(); }
    };
    lock_critical();
    Unlock u{this};
    return std::forward<F>(f)();
  }

  // Runs f() after every job with a lower index has run its ordered section
  // (or finished without one): ordered sections run one at a time, in job
  // order (OpenMP's `ordered`). At most once per job (ArgumentError).
  template <class F> decltype(auto) ordered(F&& f) {
    struct Leave {
      JobContext* c;
      ~Leave() { c->leave_ordered(); }
    };
    enter_ordered();
    Leave l{this};
    return std::forward<F>(f)();
  }

  // A Data's elements, writable: `count` rows from row `first` (count < 0:
  // to the end). T must match its dtype (float for f32, int32_t for i32).
  template <class T> std::span<T> rows(const DataRef& d, int64_t first = 0, int64_t count = -1) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, int32_t>, "JobContext::rows: float or int32_t");
    void* p = resolve(d, std::is_same_v<T, float> ? DType::f32 : DType::i32, first, count);
    return {static_cast<T*>(p), static_cast<size_t>(count * d.row_elems)};
  }

  void lock_critical();
  void unlock_critical() noexcept;
  void enter_ordered();
  void leave_ordered() noexcept;
  void* resolve(const DataRef& d, DType want, int64_t first, int64_t& count) const;

  JobContext(detail::JobEnv* env, uint64_t job) : env_(env), job_(job) {}
  JobContext at_job(uint64_t job) const { return JobContext(env_, job); }

 private:
  detail::JobEnv* env_;
  uint64_t job_;
};

// ---- futures -----------------------------------------------------------------------------

namespace detail {
struct JobBatch;
// Waits for job `i` of the batch (running queued jobs in the master
// meanwhile) and returns its result bytes; throws WorkerError for a failed
// job or runtime, ArgumentError for a job cancelled by close().
std::span<const uint8_t> batch_result(const std::shared_ptr<JobBatch>& b, uint64_t i);
bool batch_ready(const std::shared_ptr<JobBatch>& b, uint64_t i);

// (thunk, fn): how any rank runs a job. The thunk decodes the job, calls
// the function and stores the result: a trivially copyable one that fits
// straight into `slot` (returns its size), any other encoded into `out`
// (returns -1).
using JobThunk = int64_t (*)(JobContext& ctx, uint64_t fn, const uint8_t* job, size_t job_len, ByteWriter& out,
                             uint8_t* slot, size_t slot_bytes);

// The fast path of a map whose jobs are trivially copyable, of one size,
// and whose results fit their slots: runs jobs [b, e) in one call (the
// function inlined where it can be), storing result i in slots + i *
// sizeof(R) and then, for a job taking a JobContext, states[i] |=
// done_bits (release; the others' states stay 0). Stops at a job that
// throws: its exception in `err`, its index returned; e when none threw.
using ChunkThunk = uint64_t (*)(const JobContext& ctx, uint64_t fn, const uint8_t* jobs, uint8_t* slots,
                                uint8_t* states, uint8_t done_bits, uint64_t b, uint64_t e, std::exception_ptr& err);

struct JobsFast {
  size_t stride = 0;            // jobs without offsets: job i at jobs + i * stride
  ChunkThunk chunk = nullptr;   // with stride: the fast path
  void* direct_out = nullptr;   // count results of result_slot bytes copied here at the end
};

template <class F> constexpr bool kIsFnPtr = std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>;

template <class F> uint64_t fn_word(F f) {
  if constexpr (kIsFnPtr<F>) return reinterpret_cast<uint64_t>(f);
  else return 0;
}

template <class F> F fn_from(uint64_t w) {
  if constexpr (kIsFnPtr<F>) return reinterpret_cast<F>(w);
  else return F{};
}

template <class F, class J> constexpr bool kTakesCtx = std::is_invocable_v<const F&, JobContext&, const J&>;

template <class F, class J> auto job_result_type() {
  if constexpr (kTakesCtx<F, J>) return std::type_identity<std::invoke_result_t<const F&, JobContext&, const J&>>{};
  else return std::type_identity<std::invoke_result_t<const F&, const J&>>{};
}

// What a void job gives back.
struct NoResult {};

template <class F, class J>
using JobRet = typename decltype(job_result_type<F, J>())::type;
template <class F, class J>
using JobResult = std::conditional_t<std::is_void_v<JobRet<F, J>>, NoResult, std::decay_t<JobRet<F, J>>>;

template <class F, class J> constexpr void check_job() {
  static_assert(kIsFnPtr<F> || (std::is_empty_v<F> && std::is_default_constructible_v<F>),
                "synk jobs: the function must be a plain function or a lambda without captures (each worker runs "
                "its own forked copy of the program; pass data in the jobs)");
  static_assert(kTakesCtx<F, J> || std::is_invocable_v<const F&, const J&>,
                "synk jobs: the function must be callable as fn(job) or fn(JobContext&, job)");
  static_assert(Serialisable<J>,
                "synk jobs: the job type must be trivially copyable (not a pointer) or have a synk::Codec<T> "
                "specialisation (synk/jobs.hpp)");
  static_assert(std::is_void_v<JobRet<F, J>> || Serialisable<std::decay_t<JobRet<F, J>>>,
                "synk jobs: the result type must be trivially copyable (not a pointer) or have a synk::Codec<T> "
                "specialisation (synk/jobs.hpp)");
}

template <class F, class J>
int64_t job_thunk(JobContext& ctx, uint64_t fn, const uint8_t* job, size_t job_len, ByteWriter& out, uint8_t* slot,
                  size_t slot_bytes) {
  const F f = fn_from<F>(fn);
  auto call = [&]() -> decltype(auto) {
    if constexpr (std::is_trivially_copyable_v<J> && !requires(ByteReader& rr) { Codec<J>::read(rr); }) {
      if (job_len != sizeof(J)) throw FormatError("synk jobs: a job of " + std::to_string(job_len) + " bytes, expected " +
                                                  std::to_string(sizeof(J)));
      J j;
      std::memcpy(static_cast<void*>(&j), job, sizeof(J));
      if constexpr (kTakesCtx<F, J>) return f(ctx, static_cast<const J&>(j));
      else return f(static_cast<const J&>(j));
    } else {
      ByteReader r(job, job_len);
      const J j = decode_value<J>(r);
      if constexpr (kTakesCtx<F, J>) return f(ctx, j);
      else return f(j);
    }
  };
  using Ret = JobRet<F, J>;
  if constexpr (std::is_void_v<Ret>) {
    call();
    return 0;
  } else {
    using R = std::decay_t<Ret>;
    if constexpr (std::is_trivially_copyable_v<R> && !requires(ByteWriter& ww, const R& vv) { Codec<R>::write(ww, vv); }) {
      if (sizeof(R) <= slot_bytes) {
        const R r = call();
        std::memcpy(slot, static_cast<const void*>(&r), sizeof(R));
        return static_cast<int64_t>(sizeof(R));
      }
    }
    encode_value(out, call());
    return -1;
  }
}

template <class F, class J>
uint64_t chunk_thunk(const JobContext& ctx, uint64_t fn, const uint8_t* jobs, uint8_t* slots, uint8_t* states,
                     uint8_t done_bits, uint64_t b, uint64_t e, std::exception_ptr& err) {
  const F f = fn_from<F>(fn);
  using Ret = JobRet<F, J>;
  for (uint64_t i = b; i < e; ++i) {
    try {
      J j;
      std::memcpy(static_cast<void*>(&j), jobs + i * sizeof(J), sizeof(J));
      if constexpr (kTakesCtx<F, J>) {
        JobContext c = ctx.at_job(i);
        if constexpr (std::is_void_v<Ret>) f(c, static_cast<const J&>(j));
        else {
          const std::decay_t<Ret> r = f(c, static_cast<const J&>(j));
          std::memcpy(slots + i * sizeof(r), static_cast<const void*>(&r), sizeof(r));
        }
      } else {
        if constexpr (std::is_void_v<Ret>) f(static_cast<const J&>(j));
        else {
          const std::decay_t<Ret> r = f(static_cast<const J&>(j));
          std::memcpy(slots + i * sizeof(r), static_cast<const void*>(&r), sizeof(r));
        }
      }
    } catch (...) {
      err = std::current_exception();
      return i;
    }
    // Only a job with a context can have an ordered section, whose
    // progress the state records; the others' states stay 0 (done: the
    // chunk's announcement says so, failures are stored by the caller).
    if constexpr (kTakesCtx<F, J>)
      __atomic_store_n(&states[i], static_cast<uint8_t>(__atomic_load_n(&states[i], __ATOMIC_RELAXED) | done_bits),
                       __ATOMIC_RELEASE);
  }
  return e;
}

template <class R> R decode_result(std::span<const uint8_t> b) {
  if constexpr (std::is_same_v<R, NoResult>) return R{};
  else {
    ByteReader r(b.data(), b.size());
    return decode_value<R>(r);
  }
}
}  // namespace detail

// The result of a job submitted with apply_async / map_async.
template <class R> class Future {
 public:
  Future() = default;
  // Waits for the job and returns its result (each call decodes it again);
  // WorkerError when the job threw or its rank died.
  R get() const {
    check();
    return detail::decode_result<R>(detail::batch_result(batch_, index_));
  }
  void wait() const {
    check();
    (void)detail::batch_result(batch_, index_);
  }
  bool ready() const { return batch_ && detail::batch_ready(batch_, index_); }
  bool valid() const { return batch_ != nullptr; }

  Future(std::shared_ptr<detail::JobBatch> b, uint64_t i) : batch_(std::move(b)), index_(i) {}

 private:
  void check() const {
    if (!batch_) throw ArgumentError("Future::get: an empty Future");
  }
  std::shared_ptr<detail::JobBatch> batch_;
  uint64_t index_ = 0;
};

// Usable CPUs of this process: its affinity mask, capped by a cgroup CPU
// quota (v2 cpu.max, v1 cfs_quota_us, rounded up); at least 1.
int cpu_count();

}  // namespace synk
