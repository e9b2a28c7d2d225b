// src/runtime/jobs.cpp — plain jobs on every rank (synk/jobs.hpp): the job
// table in shared memory, the loop every rank runs over it, the master's
// side (map with results folded as they arrive, streams of async jobs and
// their futures), critical and ordered sections, per-rank storage.
//
// The job table lives in the args segment (Cmd::jobs):
//
//   JobTable  header: capacity, where each region starts, result spaces
//   JobRec    per job: its thunk and function, where its bytes are
//   bytes     the jobs' bytes
//   slots     per job: result_slot bytes for a result that fits
//   JobInfo   per job: which rank ran it, where its result (or error) is
//   state     per job: u8 bits (kPassed, kDone, kFailed)
//   ring      the job indices in the order they finished (+1; 0: not yet)
//
// and the shared words in ControlBlock::jobs (JobSync). The master writes
// jobs and bumps `published`; every rank claims the next job index from
// ControlBlock::map_next (workers with fetch_add and then wait for that job
// to be published; the master only claims published jobs, with a CAS, since
// it is the one publishing). A finished job appends its index to the ring
// and bumps done_count, which is what the master's fold reads.
//
// Results larger than the slot (and job errors) go to the rank's result
// space, a sparse memfd segment of kJobResultSpace bytes per rank made once
// per runtime; the rank bumps its own offset, reset per command.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "comm/futex.hpp"
#include "runtime/core.hpp"

namespace synk {

namespace detail {

namespace {

template <class T> std::atomic_ref<T> at(T& x) { return std::atomic_ref<T>(x); }

constexpr uint64_t kMagic = 0x73796e6b6a6f6273ull;  // "synkjobs"
// state bits; kInline: the result is in the job's slot (no JobInfo written).
constexpr uint8_t kPassed = 1, kDone = 2, kFailed = 4, kInline = 8;
// JobBatch::Saved only: the runtime's failure ended the job (an async job
// with no retries left); the WorkerError's message is saved.
constexpr uint8_t kLost = 16;
constexpr int64_t kSliceNs = 50'000'000;  // the master's futex sleep slice

struct JobTable {
  uint64_t magic;
  uint64_t capacity;
  uint64_t result_slot;
  uint64_t recs_off;
  uint64_t bytes_off, bytes_cap;
  uint64_t slots_off;
  uint64_t infos_off;
  uint64_t state_off;
  uint64_t ring_off;
  uint64_t arena_cap;
  uint64_t total;
  // A map's jobs share one thunk and function and have one size: no
  // records (job i at bytes_off + i * uniform_stride). 0: records.
  uint64_t uniform_thunk, uniform_fn, uniform_stride;
  uint64_t uniform_chunk;  // with uniform jobs: a ChunkThunk running many at once (0: none)
  // 1: each rank notes the job it runs in its slot (WorkerSlot::job), so
  // that the job a dead rank held is known, and skips a job whose state
  // says done before it starts (a stream of async jobs queued again after a
  // heal: the master kept those results). Maps with retries (whose master
  // takes no jobs) and every stream of async jobs.
  uint64_t track;
  uint64_t arena_id[kMaxRanks];
};

struct JobRec {
  uint64_t thunk, fn, off, len;
};

struct JobInfo {
  uint32_t rank;
  uint32_t where;  // 0 inline in the slot, 1 in the rank's result space, 2 an error message there
  uint64_t off, len;
};

uint64_t up64(uint64_t x) { return (x + 63) / 64 * 64; }

// Lays out a table for `capacity` jobs with `bytes_cap` job bytes.
JobTable layout(uint64_t capacity, uint64_t bytes_cap, uint64_t result_slot, bool ring) {
  JobTable t{};
  t.magic = kMagic;
  t.capacity = capacity;
  t.result_slot = result_slot;
  uint64_t off = up64(sizeof(JobTable));
  t.recs_off = off;
  off = up64(off + capacity * sizeof(JobRec));
  t.bytes_off = off;
  t.bytes_cap = bytes_cap;
  off = up64(off + bytes_cap);
  t.slots_off = off;
  off = up64(off + capacity * result_slot);
  t.infos_off = off;
  off = up64(off + capacity * sizeof(JobInfo));
  t.state_off = off;
  off = up64(off + capacity);
  t.ring_off = ring ? off : 0;  // 0: no ring (nobody folds in completion order)
  if (ring) off = up64(off + capacity * sizeof(uint64_t));
  t.total = off;
  t.arena_cap = kJobResultSpace;
  return t;
}

}  // namespace

std::string unknown_segment(uint64_t id) {
  // Segment ids are unique in the process, so an id this rank does not
  // hold was never one of this runtime's live arrays.
  return "JobContext::rows: the DataRef names segment " + std::to_string(id) +
         ", which this runtime does not hold: its Data was destroyed (its last handle went) or belongs to a "
         "runtime that was closed";
}

// One rank's view of the running table.
struct JobEnv {
  ControlBlock* cb = nullptr;
  JobSync* s = nullptr;
  uint8_t* base = nullptr;
  JobTable t{};
  int rank = 0, ranks = 1;
  int64_t spin_ns = 0;
  uint8_t* arena = nullptr;
  uint64_t arena_used = 0;
  RuntimeCore* core = nullptr;  // the master's, for failure checks (null in workers)
  std::function<std::span<uint8_t>(uint64_t)> seg;
  ByteWriter out;
  bool in_critical = false;

  JobRec* recs() const { return reinterpret_cast<JobRec*>(base + t.recs_off); }
  JobInfo* infos() const { return reinterpret_cast<JobInfo*>(base + t.infos_off); }
  uint8_t& state(uint64_t i) const { return base[t.state_off + i]; }
  uint64_t* ring() const { return reinterpret_cast<uint64_t*>(base + t.ring_off); }
  uint8_t* slot(uint64_t i) const { return base + t.slots_off + i * t.result_slot; }

  // The master's waits wake every kSliceNs to see a failure of the runtime.
  void check_failed(const char* what) const {
    if (core && core->failed.load()) core->throw_failure(what);
  }

  // The master gives up on a critical or ordered section it has waited
  // for longer than RuntimeOptions::timeout (a stopped rank holding it).
  void check_wait(const char* what, int64_t since) const {
    check_failed(what);
    if (core && comm::monotonic_ns() - since > core->opts.timeout.count() * 1'000'000) {
      core->fail(std::string(what) + ": the master waited longer than the timeout of " +
                     std::to_string(core->opts.timeout.count()) + " ms; the workers were stopped",
                 -1);
      core->throw_failure(what);
    }
  }

  // Sleeps while *word == v (spinning first), a slice at most.
  void sleep_on(uint32_t* word, uint32_t v, uint32_t* sleepers) const {
    const int64_t t0 = comm::monotonic_ns();
    for (uint32_t i = 1;; ++i) {
      comm::cpu_relax();
      if (at(*word).load(std::memory_order_acquire) != v) return;
      if ((i & 255) == 0 && comm::monotonic_ns() - t0 >= spin_ns) break;
    }
    at(*sleepers).fetch_add(1, std::memory_order_seq_cst);
    if (at(*word).load(std::memory_order_seq_cst) == v) comm::futex_wait(word, v, kSliceNs);
    at(*sleepers).fetch_sub(1, std::memory_order_seq_cst);
  }

  void bump(uint32_t* gen, uint32_t* sleepers) const {
    at(*gen).fetch_add(1, std::memory_order_seq_cst);
    if (at(*sleepers).load(std::memory_order_seq_cst) != 0) comm::futex_wake(gen);
  }

  // ordered: moves ordered_next past every job that has passed.
  void advance_ordered() const {
    auto next = at(s->ordered_next);
    const uint64_t pub = at(s->published).load(std::memory_order_acquire);
    for (;;) {
      uint64_t k = next.load(std::memory_order_seq_cst);
      if (k >= pub || !(at(state(k)).load(std::memory_order_seq_cst) & kPassed)) return;
      if (next.compare_exchange_strong(k, k + 1, std::memory_order_seq_cst)) bump(&s->ordered_gen, &s->ordered_waiters);
    }
  }

  void pass_ordered(uint64_t i) const {
    at(state(i)).fetch_or(kPassed, std::memory_order_seq_cst);
    if (at(s->ordered_waiters).load(std::memory_order_seq_cst) != 0) advance_ordered();
  }

  // Space in this rank's result space (throws when it is full).
  uint64_t take_space(uint64_t n, uint64_t job) {
    if (!arena || n > t.arena_cap - arena_used)
      throw Error("job " + std::to_string(job) + ": its result of " + std::to_string(n) + " bytes does not fit in rank " +
                  std::to_string(rank) + "'s result space (" + std::to_string(t.arena_cap - arena_used) + " of " +
                  std::to_string(t.arena_cap) + " bytes left in this map)");
    const uint64_t off = arena_used;
    arena_used += (n + 7) / 8 * 8;
    return off;
  }

  void fail_job(uint64_t i, const char* msg) {
    JobInfo& inf = infos()[i];
    inf.rank = static_cast<uint32_t>(rank);
    const size_t len = std::min<size_t>(std::strlen(msg), 4000);
    if (arena && len + 8 <= t.arena_cap - arena_used) {
      const uint64_t off = take_space(len, i);
      std::memcpy(arena + off, msg, len);
      inf.where = 2;
      inf.off = off;
      inf.len = len;
    } else {
      inf.where = 2;
      inf.off = 0;
      inf.len = 0;
    }
  }

  // Job i's thunk, function and bytes.
  JobRec rec(uint64_t i) const {
    if (t.uniform_thunk) return {t.uniform_thunk, t.uniform_fn, i * t.uniform_stride, t.uniform_stride};
    return recs()[i];
  }

  // Runs claimed job i on this rank; returns its state bits (stored by the
  // caller, release: the result is written first).
  uint8_t run_one(uint64_t i) {
    const JobRec r = rec(i);
    JobContext ctx(this, i);
    // The job this rank runs, for the stall report (-1 again when it ends).
    struct Doing {
      explicit Doing(uint64_t i) { trace::set_detail(static_cast<int64_t>(i)); }
      ~Doing() { trace::set_detail(-1); }
    } doing(i);
    out.clear();
    try {
      if (r.off > t.bytes_cap || r.len > t.bytes_cap - r.off || r.thunk == 0)
        throw FormatError("runtime: corrupt job record " + std::to_string(i));
      const int64_t direct =
          reinterpret_cast<JobThunk>(r.thunk)(ctx, r.fn, base + t.bytes_off + r.off, r.len, out, slot(i), t.result_slot);
      if (direct >= 0) {
        if (static_cast<uint64_t>(direct) == t.result_slot) return kDone | kInline;
        infos()[i] = {static_cast<uint32_t>(rank), 0, 0, static_cast<uint64_t>(direct)};
        return kDone;
      }
      const std::vector<uint8_t>& b = out.bytes();
      if (b.size() <= t.result_slot) {
        if (!b.empty()) std::memcpy(slot(i), b.data(), b.size());
        if (b.size() != t.result_slot) {
          JobInfo& inf = infos()[i];
          inf = {static_cast<uint32_t>(rank), 0, 0, b.size()};
          return kDone;
        }
        return kDone | kInline;
      }
      JobInfo& inf = infos()[i];
      inf = {static_cast<uint32_t>(rank), 1, take_space(b.size(), i), b.size()};
      std::memcpy(arena + inf.off, b.data(), b.size());
      return kDone;
    } catch (const std::exception& e) {
      if (in_critical) unlock_critical();
      fail_job(i, e.what());
    } catch (...) {
      if (in_critical) unlock_critical();
      fail_job(i, "unknown exception");
    }
    return kFailed;
  }

  // Runs claimed jobs [b, e): each job's state is stored as it finishes
  // (with kPassed unless it passed its ordered section already); then the
  // chunk is announced at once (ring, done_count, one wake-up).
  void run_chunk(uint64_t b, uint64_t e) {
    if (t.uniform_chunk) {
      // Trivially copyable jobs and results: the chunk in one call.
      const JobContext ctx(this, b);
      trace::set_detail(static_cast<int64_t>(b), static_cast<int64_t>(e));  // for the stall report
      struct Undo {
        ~Undo() { trace::set_detail(-1); }
      } undo;
      for (uint64_t from = b; from < e;) {
        std::exception_ptr err;
        const uint64_t stop = reinterpret_cast<ChunkThunk>(t.uniform_chunk)(
            ctx, t.uniform_fn, base + t.bytes_off, base + t.slots_off, base + t.state_off, kDone | kInline | kPassed,
            from, e, err);
        if (stop >= e) break;
        std::string msg = "unknown exception";
        try {
          std::rethrow_exception(err);
        } catch (const std::exception& x) {
          msg = x.what();
        } catch (...) {
        }
        if (in_critical) unlock_critical();
        fail_job(stop, msg.c_str());
        auto sref = at(state(stop));
        sref.store(static_cast<uint8_t>(sref.load(std::memory_order_relaxed) | kFailed | kPassed),
                   std::memory_order_release);
        from = stop + 1;
      }
    } else {
      run_each(b, e);
    }
    announce(b, e);
  }

  void run_each(uint64_t b, uint64_t e) {
    for (uint64_t i = b; i < e; ++i) {
      if (t.track) {
        // Settled before a heal (JobTable::track): announced, not run.
        if (at(state(i)).load(std::memory_order_acquire) & kDone) continue;
        at(cb->slots[rank].job).store(i + 1, std::memory_order_seq_cst);
      }
      const uint8_t st = run_one(i);
      auto sref = at(state(i));
      sref.store(static_cast<uint8_t>(sref.load(std::memory_order_relaxed) | st | kPassed), std::memory_order_release);
    }
  }

  void announce(uint64_t b, uint64_t e) {
    const uint64_t d = at(s->done_count).fetch_add(e - b, std::memory_order_seq_cst);  // a full fence too
    if (t.ring_off)
      for (uint64_t i = b; i < e; ++i) at(ring()[d + (i - b)]).store(i + 1, std::memory_order_release);
    // Someone waits in an ordered section: move ordered_next past these.
    if (at(s->ordered_waiters).load(std::memory_order_seq_cst) != 0) advance_ordered();
    bump(&s->done_gen, &s->master_sleeps);
  }

  // Takes the next jobs below `pub` (guided: a share of what is left), if any.
  bool claim(uint64_t pub, uint64_t& b, uint64_t& e) const {
    auto next = at(cb->map_next);
    uint64_t cur = next.load(std::memory_order_seq_cst);
    while (cur < pub) {
      const uint64_t left = pub - cur;
      const uint64_t k = std::clamp<uint64_t>(left / (2 * static_cast<uint64_t>(ranks)), 1, 4096);
      if (next.compare_exchange_weak(cur, cur + k, std::memory_order_seq_cst)) {
        b = cur;
        e = cur + k;
        return true;
      }
    }
    return false;
  }

  void lock_critical() {
    auto w = at(s->crit);
    uint32_t c = 0;
    if (!w.compare_exchange_strong(c, 1, std::memory_order_acquire)) {
      if (c != 2) c = w.exchange(2, std::memory_order_acquire);
      const int64_t since = comm::monotonic_ns();
      while (c != 0) {
        check_wait("JobContext::critical", since);
        comm::futex_wait(&s->crit, 2, kSliceNs);
        c = w.exchange(2, std::memory_order_acquire);
      }
    }
    in_critical = true;
  }
  void unlock_critical() noexcept {
    in_critical = false;
    if (at(s->crit).fetch_sub(1, std::memory_order_release) != 1) {
      at(s->crit).store(0, std::memory_order_release);
      comm::futex_wake(&s->crit, 1);
    }
  }
};

namespace {

// Checks a table read from shared memory against the n bytes it lies in.
JobTable check_table(const uint8_t* args, size_t n) {
  JobTable t;
  if (n < sizeof t) throw FormatError("runtime: corrupt job table (too short)");
  std::memcpy(&t, args, sizeof t);
  const uint64_t cap = t.capacity;
  auto inside = [n](uint64_t off, uint64_t each, uint64_t k) {
    return off <= n && (each == 0 || k <= (n - off) / each);
  };
  if (t.magic != kMagic || cap > (uint64_t{1} << 40) || t.result_slot > (uint64_t{1} << 20) ||
      !inside(t.recs_off, sizeof(JobRec), cap) || !inside(t.bytes_off, 1, t.bytes_cap) ||
      !inside(t.slots_off, t.result_slot, cap) || !inside(t.infos_off, sizeof(JobInfo), cap) ||
      !inside(t.state_off, 1, cap) || (t.ring_off && !inside(t.ring_off, sizeof(uint64_t), cap)) || t.recs_off % 8 ||
      t.infos_off % 8 || t.ring_off % 8 ||
      (t.uniform_thunk && t.uniform_stride && cap > t.bytes_cap / t.uniform_stride))
    throw FormatError("runtime: corrupt job table");
  return t;
}

}  // namespace

void run_jobs_worker(ControlBlock* cb, uint8_t* args, size_t n, int rank, int ranks, int64_t spin_ns,
                     const std::function<std::span<uint8_t>(uint64_t)>& seg) {
  static ByteWriter out;  // kept from one command to the next (no allocation per job)
  JobEnv e;
  e.cb = cb;
  e.s = &cb->jobs;
  e.base = args;
  e.t = check_table(args, n);
  e.rank = rank;
  e.ranks = ranks;
  e.spin_ns = spin_ns;
  e.seg = seg;
  e.out = std::move(out);
  if (e.t.arena_id[rank]) {
    std::span<uint8_t> a = seg(e.t.arena_id[rank]);
    if (a.size() < e.t.arena_cap) throw FormatError("runtime: corrupt job table (result space)");
    e.arena = a.data();
  }
  JobSync& s = cb->jobs;
  trace::Span span(trace::Kind::map, cb->cmd.call_no);
  for (;;) {
    // A cancelled table (close(), or a map whose fold threw): take nothing more.
    if (at(s.cancel).load(std::memory_order_seq_cst)) break;
    const uint32_t g = at(s.pub_gen).load(std::memory_order_seq_cst);
    const uint64_t pub = at(s.published).load(std::memory_order_seq_cst);
    if (pub > e.t.capacity) throw FormatError("runtime: corrupt job table (more jobs than slots)");
    uint64_t b, end;
    if (e.claim(pub, b, end)) {
      e.run_chunk(b, end);
      continue;
    }
    // Nothing left to take: the end of the table, or wait for more jobs.
    if (at(s.closed).load(std::memory_order_seq_cst) &&
        at(cb->map_next).load(std::memory_order_seq_cst) >= at(s.published).load(std::memory_order_seq_cst))
      break;
    e.sleep_on(&s.pub_gen, g, &s.pub_sleepers);
  }
  out = std::move(e.out);
}

// ---- the master's side --------------------------------------------------------------------

// A job table the master has opened: a map, or a stream of async jobs.
struct JobStream {
  RuntimeCore* c = nullptr;
  JobEnv env;
  uint64_t published = 0;
  uint64_t bytes_used = 0;
  bool signalled = false;
  bool open = false;
  std::string label;
  uint64_t call = 0;  // the runtime's call number of the stream (the timeline's spans)

  // Async jobs with retries (docs/faults.md). From the first job queued
  // with retries on, an entry per job of the stream (empty before).
  struct Try {
    int retries = 0;   // as queued
    int failures = 0;  // failures of the runtime while it was unfinished
    int lost = 0;      // of those, the ones whose dead rank was running it
    const char* what = "apply_async";
  };
  std::vector<Try> tries;
  // A job with retries is queued: the master takes no more jobs of the
  // stream (it is the one process the runtime cannot lose).
  bool workers_only = false;
  bool counted = false;  // the runtime's present failure is counted in `tries`
  int64_t held = -1;     // the job the dead rank was running at that failure (-1: none known)
  // After heal(): the table is gone (heal reuses the args segment), and the
  // unfinished jobs wait here for the next call to queue them again.
  bool parked = false;
  std::vector<JobRec> parked_recs;  // by job index; off/len in parked_bytes; thunk 0: settled
  std::vector<uint8_t> parked_bytes;
};

// A stream's jobs as their futures see them: live in the table while it
// runs, copied out when it is finished.
struct JobBatch {
  std::weak_ptr<RuntimeCore> owner;
  RuntimeCore* c = nullptr;
  std::shared_ptr<JobStream> stream;  // while it runs
  // Set last (release): a finished batch never changes again, so its
  // futures read it without claiming the runtime.
  std::atomic<bool> finished{false};
  std::string failure;  // the runtime failed (every unsaved job throws this)
  int failure_rank = -1;
  // Jobs settled while the stream runs (a failure counted against jobs
  // with retries) are saved at once; the rest when it finishes.
  struct Saved {
    uint8_t state = 0;  // kDone, kFailed, kLost, 0: never ran (cancelled) or not settled yet
    int rank = 0;
    uint64_t off = 0, len = 0;
  };
  std::vector<Saved> saved;
  std::vector<uint8_t> bytes;
};

namespace {

void ensure_arenas(RuntimeCore& c) {
  if (!c.arenas.empty()) return;
  c.arenas.resize(static_cast<size_t>(c.n));
  c.arena_ids.assign(static_cast<size_t>(c.n), 0);
  for (int r = 0; r < c.n; ++r) {
    c.arenas[static_cast<size_t>(r)] = comm::SharedSegment::create(kJobResultSpace, "synk-job-results");
    if (r > 0) c.arena_ids[static_cast<size_t>(r)] = c.publish(c.arenas[static_cast<size_t>(r)], r);
  }
}

std::shared_ptr<JobStream> open_stream(RuntimeCore& c, uint64_t capacity, uint64_t bytes_cap, uint64_t result_slot,
                                       const std::string& label, const JobRec& uniform = {}, bool ring = false,
                                       bool track = false) {
  ensure_arenas(c);
  JobTable t = layout(capacity, bytes_cap, result_slot, ring);
  t.track = track ? 1 : 0;
  t.uniform_thunk = uniform.thunk;
  t.uniform_fn = uniform.fn;
  t.uniform_stride = uniform.len;
  t.uniform_chunk = uniform.off;  // (the ChunkThunk travels in the record's offset field)
  for (int r = 1; r < c.n; ++r) t.arena_id[r] = c.arena_ids[static_cast<size_t>(r)];
  if (c.n > 1) c.ensure_args(t.total);
  auto st = std::make_shared<JobStream>();
  st->c = &c;
  st->label = label;
  std::vector<uint8_t> local;  // one rank: the table lives in the master only
  uint8_t* base = nullptr;
  if (c.n > 1) {
    base = static_cast<uint8_t*>(c.args.data());
  } else {
    st->env.out = ByteWriter();
    static thread_local std::vector<uint8_t> single;
    if (single.size() < t.total) single.resize(t.total);
    base = single.data();
  }
  std::memcpy(base, &t, sizeof t);
  std::memset(base + t.state_off, 0, capacity);
  // A rank's note of its job is from an earlier table: not this one's.
  if (track)
    for (int r = 0; r < c.n; ++r) at(c.cb->slots[r].job).store(0);
  if (ring) std::memset(base + t.ring_off, 0, capacity * sizeof(uint64_t));
  JobSync& s = c.cb->jobs;
  at(s.published).store(0);
  at(s.closed).store(0);
  at(s.cancel).store(0);
  at(s.crit).store(0);
  at(s.ordered_next).store(0);
  at(s.done_count).store(0);
  at(c.cb->map_next).store(0);
  JobEnv& e = st->env;
  e.cb = c.cb;
  e.s = &s;
  e.base = base;
  e.t = t;
  e.rank = 0;
  e.ranks = c.n;
  e.spin_ns = c.spin_ns;
  e.arena = static_cast<uint8_t*>(c.arenas[0].data());
  e.arena_used = 0;
  e.core = &c;
  e.seg = [&c](uint64_t id) -> std::span<uint8_t> {
    auto it = c.seg_ptr.find(id);
    if (it == c.seg_ptr.end()) throw ArgumentError(unknown_segment(id));
    return {const_cast<uint8_t*>(it->second.data()), it->second.size()};
  };
  st->call = ++c.calls;
  if (c.n > 1) {
    c.cb->cmd.args_id = c.args_id;
    c.cb->cmd.args_bytes = t.total;
    c.signal(Cmd::jobs, false);
    st->signalled = true;
  }
  st->open = true;
  return st;
}

bool has_room(const JobStream& st, uint64_t bytes) {
  return st.published < st.env.t.capacity && bytes <= st.env.t.bytes_cap - st.bytes_used;
}

void push(JobStream& st, JobThunk thunk, uint64_t fn, const uint8_t* job, uint64_t len) {
  JobEnv& e = st.env;
  const uint64_t i = st.published;
  if (len) std::memcpy(e.base + e.t.bytes_off + st.bytes_used, job, len);
  e.recs()[i] = {reinterpret_cast<uint64_t>(thunk), fn, st.bytes_used, len};
  st.bytes_used += len;
  st.published = i + 1;
  at(e.s->published).store(i + 1, std::memory_order_seq_cst);
  e.bump(&e.s->pub_gen, &e.s->pub_sleepers);
}

// The master takes the next published jobs and runs them; false if none.
bool run_some(JobStream& st) {
  if (st.workers_only) return false;
  uint64_t b, e;
  if (!st.env.claim(st.published, b, e)) return false;
  st.env.run_chunk(b, e);
  return true;
}

// Waits (a slice at most) for another job to finish after `gen` was read.
void wait_done(JobStream& st, uint32_t gen, int64_t& last_progress) {
  JobEnv& e = st.env;
  e.check_failed(st.label.c_str());
  e.sleep_on(&e.s->done_gen, gen, &e.s->master_sleeps);
  e.check_failed(st.label.c_str());
  const int64_t now = comm::monotonic_ns();
  if (at(e.s->done_gen).load() != gen) {
    last_progress = now;
    return;
  }
  RuntimeCore& c = *st.c;
  if (now - last_progress > c.opts.timeout.count() * 1'000'000) {
    c.fail("no job of " + st.label + " finished within the timeout of " + std::to_string(c.opts.timeout.count()) +
               " ms; the workers were stopped",
           -1);
    c.throw_failure(st.label);
  }
}

// Ends the stream: no more jobs; the master runs what is left, waits for
// every job and for the workers to leave the command.
void close_stream(JobStream& st) {
  trace::Span span(trace::Kind::map, st.call);  // the master's async jobs and its wait for the rest
  JobEnv& e = st.env;
  at(e.s->closed).store(1, std::memory_order_seq_cst);
  e.bump(&e.s->pub_gen, &e.s->pub_sleepers);
  int64_t last = comm::monotonic_ns();
  for (;;) {
    if (run_some(st)) continue;
    const uint32_t g = at(e.s->done_gen).load(std::memory_order_seq_cst);
    if (at(e.s->done_count).load(std::memory_order_seq_cst) >= st.published) break;
    wait_done(st, g, last);
  }
  st.open = false;
  if (st.signalled) {
    st.signalled = false;
    st.c->wait_workers(st.label);
  }
}

std::span<const uint8_t> live_result(const JobEnv& e, RuntimeCore& c, uint64_t i) {
  if (at(e.state(i)).load(std::memory_order_acquire) & kInline) return {e.slot(i), e.t.result_slot};
  const JobInfo& inf = e.infos()[i];
  if (inf.where == 0) return {e.slot(i), inf.len};
  const uint8_t* a = static_cast<const uint8_t*>(c.arenas[inf.rank].data());
  return {a + inf.off, inf.len};
}

std::string job_error(const JobEnv& e, RuntimeCore& c, uint64_t i) {
  const JobInfo& inf = e.infos()[i];
  if (inf.where != 2 || inf.rank >= c.arenas.size()) return "?";
  const char* a = static_cast<const char*>(c.arenas[inf.rank].data());
  return std::string(a + inf.off, inf.len);
}

[[noreturn]] void throw_job_error(const std::string& what, uint64_t i, int rank, const std::string& msg) {
  throw WorkerError("synk runtime: " + what + ": job " + std::to_string(i) + " failed on rank " +
                        std::to_string(rank) + (rank == 0 ? " (master)" : "") + ": " + msg,
                    rank);
}

// Saves job i's outcome into its batch, if it has one and none is saved.
void save_one(JobBatch& b, const JobStream& st, uint64_t i) {
  JobBatch::Saved& s = b.saved[i];
  if (s.state) return;
  const JobEnv& e = st.env;
  const uint8_t state = at(e.state(i)).load(std::memory_order_acquire);
  s.rank = (state & kInline) ? 0 : static_cast<int>(e.infos()[i].rank);
  if (state & kDone) {
    std::span<const uint8_t> r = live_result(e, *st.c, i);
    s.state = kDone;
    s.off = b.bytes.size();
    s.len = r.size();
    b.bytes.insert(b.bytes.end(), r.begin(), r.end());
  } else if (state & kFailed) {
    const std::string m = job_error(e, *st.c, i);
    s.state = kFailed;
    s.off = b.bytes.size();
    s.len = m.size();
    b.bytes.insert(b.bytes.end(), m.begin(), m.end());
  }
}

// Ends job i with the runtime's failure: its get() throws WorkerError(msg, rank).
void save_lost(JobBatch& b, uint64_t i, const std::string& msg, int rank) {
  JobBatch::Saved& s = b.saved[i];
  s.state = kLost;
  s.rank = rank;
  s.off = b.bytes.size();
  s.len = msg.size();
  b.bytes.insert(b.bytes.end(), msg.begin(), msg.end());
}

void end_batch(JobBatch& b) {
  b.stream.reset();
  b.finished.store(true, std::memory_order_release);
}

// Copies a finished stream's results into its batch for the futures.
void save_batch(JobBatch& b) {
  JobStream& st = *b.stream;
  if (!st.parked) {  // (a parked stream's table is gone: what finished is saved)
    if (b.saved.size() < st.published) b.saved.resize(st.published);
    for (uint64_t i = 0; i < st.published; ++i) save_one(b, st, i);
  }
  end_batch(b);
}

// ---- async jobs with retries ----------------------------------------------------------------
//
// A failure of the runtime counts as a try of every unfinished job of the
// stream (note_failure, once per failure). Then either a job with retries
// > 0 has none left, and the stream ends with the runtime left failed
// (give_up), or the runtime heals: RuntimeCore::heal calls fail_jobs,
// which keeps the unfinished jobs out of the table (park: heal reuses the
// args segment), and the next call touching jobs queues them again in a
// new table under their old indices (unpark), the settled ones marked
// done, so that futures, JobContext::job() and ordered sections see the
// same numbers.

uint64_t unsettled(const JobBatch& b, uint64_t published) {
  uint64_t k = 0;
  for (uint64_t i = 0; i < published; ++i) k += b.saved[i].state == 0;
  return k;
}

std::string tries_text(int k) { return std::to_string(k) + (k == 1 ? " try" : " tries"); }

// Counts the runtime's failure against every unfinished job of the stream
// (once), saves what finished, and settles the jobs queued with retries 0
// (they throw the failure, as without retries). Returns the culprit: of
// the jobs with retries > 0 and none left, the one the dead rank was
// running, else the first; -1 if none.
int64_t note_failure(RuntimeCore& c, JobStream& st, JobBatch& b) {
  std::string cause;
  int dead = -1;
  {
    std::lock_guard<std::mutex> lk(c.fail_mu);
    cause = c.fail_msg;
    dead = c.fail_rank;
  }
  const uint64_t n = st.published;
  if (b.saved.size() < n) b.saved.resize(n);
  st.tries.resize(n);
  if (!st.counted) {
    st.held = -1;
    if (!st.parked) {
      // fail() stops the survivors, but a job one finishes meanwhile would
      // be counted unfinished and run again: wait until they are gone (as
      // heal does, 5 s at most) before reading what finished.
      const int64_t until = comm::monotonic_ns() + 5'000'000'000;
      while (c.reaped.load() < c.n - 1 && comm::monotonic_ns() < until) ::usleep(200);
      for (uint64_t i = 0; i < n; ++i) save_one(b, st, i);
      if (dead > 0 && dead < c.n) {
        const uint64_t j = at(c.cb->slots[dead].job).load(std::memory_order_seq_cst);
        if (j > 0 && j - 1 < n && b.saved[j - 1].state == 0) st.held = static_cast<int64_t>(j - 1);
      }
    }
    st.counted = true;
    for (uint64_t i = 0; i < n; ++i) {
      if (b.saved[i].state) continue;
      ++st.tries[i].failures;
      if (static_cast<int64_t>(i) == st.held) ++st.tries[i].lost;
    }
  }
  int64_t culprit = -1;
  for (uint64_t i = 0; i < n; ++i) {
    const JobStream::Try& t = st.tries[i];
    if (b.saved[i].state || t.failures <= t.retries) continue;
    if (t.retries == 0) save_lost(b, i, "synk runtime: " + st.label + " failed: " + cause, dead);  // throw_failure's text
    else if (culprit < 0 || static_cast<int64_t>(i) == st.held) culprit = static_cast<int64_t>(i);
  }
  return culprit;
}

// Settles job i, which has retries > 0 and none left, with map's message.
void save_exhausted(RuntimeCore& c, JobStream& st, JobBatch& b, uint64_t i) {
  std::string cause;
  int dead = -1;
  {
    std::lock_guard<std::mutex> lk(c.fail_mu);
    cause = c.fail_msg;
    dead = c.fail_rank;
  }
  const JobStream::Try& t = st.tries[i];
  const std::string tries = tries_text(t.failures);
  save_lost(b, i,
            "synk runtime: Runtime::" + std::string(t.what) + " failed after " + tries + ": job " + std::to_string(i) +
                (static_cast<int64_t>(i) == st.held ? " was running on rank " + std::to_string(dead) + " when it was lost"
                                                    : " had not finished when the runtime failed") +
                " (the job lost its rank in " + std::to_string(t.lost) + " of " + tries + "): " + cause,
            dead);
}

// A job with retries has none left (the culprit): the runtime stays failed
// (as a map with retries leaves it) and every unfinished job ends, the
// others naming the culprit.
void give_up(RuntimeCore& c, JobStream& st, JobBatch& b, int64_t culprit) {
  save_exhausted(c, st, b, static_cast<uint64_t>(culprit));
  std::string cause;
  int dead = -1;
  {
    std::lock_guard<std::mutex> lk(c.fail_mu);
    cause = c.fail_msg;
    dead = c.fail_rank;
  }
  const JobStream::Try& t = st.tries[static_cast<size_t>(culprit)];
  for (uint64_t i = 0; i < st.published; ++i)
    if (b.saved[i].state == 0)
      save_lost(b, i,
                "synk runtime: Future::get: job " + std::to_string(i) + " was not run again: job " +
                    std::to_string(culprit) + " (Runtime::" + t.what + ") failed after " + tries_text(t.failures) +
                    ", losing its rank in " + std::to_string(t.lost) +
                    " of them, which leaves the runtime failed (heal() it, then queue the job again): " + cause,
                dead);
}

// Keeps the stream's unfinished jobs (their bytes) while heal replaces the
// table's segment contents.
void park(JobStream& st, const JobBatch& b) {
  if (st.parked) return;
  const JobEnv& e = st.env;
  st.parked_recs.assign(st.published, JobRec{});
  st.parked_bytes.clear();
  for (uint64_t i = 0; i < st.published; ++i) {
    if (b.saved[i].state) continue;
    const JobRec r = e.rec(i);
    if (r.off > e.t.bytes_cap || r.len > e.t.bytes_cap - r.off) continue;  // corrupt: never queued again
    st.parked_recs[i] = {r.thunk, r.fn, st.parked_bytes.size(), r.len};
    st.parked_bytes.insert(st.parked_bytes.end(), e.base + e.t.bytes_off + r.off,
                           e.base + e.t.bytes_off + r.off + r.len);
  }
  st.parked = true;
  st.open = false;
  st.signalled = false;  // the command ended with the workers
}

// Queues a parked stream's jobs again on the healed runtime: a new table
// of the same size, its jobs at their old indices, the settled ones done.
void unpark(RuntimeCore& c) {
  std::shared_ptr<JobStream> old = c.stream;
  JobBatch& b = *c.batch;
  const JobTable& t = old->env.t;
  std::shared_ptr<JobStream> st = open_stream(c, t.capacity, t.bytes_cap, t.result_slot, old->label, {}, false, true);
  JobEnv& e = st->env;
  const uint64_t n = old->parked_recs.size();
  uint64_t used = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const JobRec& r = old->parked_recs[i];
    if (r.thunk == 0 || b.saved[i].state) {
      e.recs()[i] = JobRec{};
      e.state(i) = kDone | kPassed;  // run_each skips it; ordered sections pass it
      continue;
    }
    if (r.len) std::memcpy(e.base + e.t.bytes_off + used, old->parked_bytes.data() + r.off, r.len);
    e.recs()[i] = {r.thunk, r.fn, used, r.len};
    used += r.len;
  }
  st->published = n;
  st->bytes_used = used;
  st->tries = std::move(old->tries);
  st->workers_only = true;
  b.stream = st;
  c.stream = st;
  at(e.s->published).store(n, std::memory_order_seq_cst);
  e.bump(&e.s->pub_gen, &e.s->pub_sleepers);
}

enum class Recovery { none, healed, gave_up };

// The master's answer to a failed runtime holding the stream (claimed):
// heals it and queues the unfinished jobs again when one has retries left
// (healed), ends the stream with the runtime left failed when a job with
// retries has none left (gave_up; *culprit is that job), else none (no job
// with retries: as without retries; settled jobs stay settled).
Recovery recover_jobs(RuntimeCore& c, const std::string& what, int64_t* culprit = nullptr) {
  if (!c.stream || !c.batch || c.stream->tries.empty()) return Recovery::none;
  std::shared_ptr<JobStream> st = c.stream;
  std::shared_ptr<JobBatch> b = c.batch;
  const int64_t bad = note_failure(c, *st, *b);
  if (bad >= 0 || unsettled(*b, st->published) == 0) {
    if (bad >= 0) give_up(c, *st, *b, bad);
    if (culprit) *culprit = bad;
    c.batch.reset();
    c.stream.reset();
    end_batch(*b);
    return bad >= 0 ? Recovery::gave_up : Recovery::none;
  }
  c.heal(what.c_str());  // parks the stream (fail_jobs)
  unpark(c);
  return Recovery::healed;
}

// A finished or settled job's outcome.
std::span<const uint8_t> saved_result(const JobBatch& b, uint64_t i) {
  if (i < b.saved.size()) {
    const JobBatch::Saved& s = b.saved[i];
    const std::string text(reinterpret_cast<const char*>(b.bytes.data() + s.off), s.state == kDone ? 0 : s.len);
    if (s.state == kDone) return {b.bytes.data() + s.off, s.len};
    if (s.state == kFailed) throw_job_error("Future::get", i, s.rank, text);
    if (s.state == kLost) throw WorkerError(text, s.rank);
  }
  if (!b.failure.empty()) throw WorkerError(b.failure, b.failure_rank);
  throw ArgumentError("Future::get: job " + std::to_string(i) + " never ran: the runtime was closed first");
}

}  // namespace

void finish_jobs(RuntimeCore& c) {
  for (;;) {
    if (!c.stream) return;
    try {
      if (c.stream->parked) {
        if (c.failed.load()) c.throw_failure(c.stream->label);
        unpark(c);
      }
      close_stream(*c.stream);
      break;
    } catch (const WorkerError& e) {
      int64_t culprit = -1;
      if (c.failed.load() && c.stream && !c.stream->tries.empty()) {
        std::shared_ptr<JobBatch> b = c.batch;
        const Recovery r = recover_jobs(c, c.stream->label, &culprit);
        if (r == Recovery::healed) continue;
        if (r == Recovery::gave_up) {
          (void)saved_result(*b, static_cast<uint64_t>(culprit));  // throws the culprit's WorkerError
        }
        if (!c.stream) throw;  // every job settled: the failure
      }
      std::shared_ptr<JobBatch> b = std::move(c.batch);
      c.stream.reset();
      if (b) {
        b->failure = e.what();
        b->failure_rank = e.rank();
        end_batch(*b);
      }
      throw;
    }
  }
  std::shared_ptr<JobBatch> b = std::move(c.batch);
  std::shared_ptr<JobStream> st = std::move(c.stream);
  if (b) save_batch(*b);
}

void cancel_jobs(RuntimeCore& c) noexcept {
  if (!c.stream) return;
  if (c.batch) {
    JobBatch& b = *c.batch;
    // Keep what finished; the rest never ran (or, with retries in a failed
    // runtime, ended with its failure).
    try {
      if (c.failed.load() && !c.stream->tries.empty() && b.failure.empty()) {
        std::lock_guard<std::mutex> lk(c.fail_mu);
        b.failure = "synk runtime: " + c.stream->label + " failed: " + c.fail_msg;
        b.failure_rank = c.fail_rank;
      }
      save_batch(b);  // jobs not run keep state 0: their get() says "never ran"
    } catch (...) {
    }
    end_batch(b);
    c.batch.reset();
  }
  JobSync& s = c.cb->jobs;
  at(s.cancel).store(1, std::memory_order_seq_cst);
  at(s.closed).store(1, std::memory_order_seq_cst);
  at(s.pub_gen).fetch_add(1);
  comm::futex_wake(&s.pub_gen);
  c.stream.reset();
}

void fail_jobs(RuntimeCore& c, const std::string& failure, int rank) noexcept {
  if (c.stream && c.batch && !c.stream->tries.empty()) {
    // Jobs with retries left wait for the healed runtime (park).
    try {
      JobStream& st = *c.stream;
      JobBatch& b = *c.batch;
      // Runtime::heal() itself: jobs with none left end, the others wait.
      (void)note_failure(c, st, b);
      for (uint64_t i = 0; i < st.published; ++i)
        if (b.saved[i].state == 0 && st.tries[i].failures > st.tries[i].retries) save_exhausted(c, st, b, i);
      if (unsettled(b, st.published) > 0) {
        park(st, b);
        st.counted = false;  // the next failure counts again
        return;
      }
    } catch (...) {
    }
  }
  if (c.batch) {
    c.batch->failure = failure;
    c.batch->failure_rank = rank;
  }
  cancel_jobs(c);
}

bool heal_for_jobs(RuntimeCore& c, const std::string& what) {
  if (!c.open || self_pid() != c.master_pid || !c.failed.load()) return false;
  if (!c.try_claim()) return false;  // another call (or this thread's, from a job) holds the runtime
  struct Unclaim {
    RuntimeCore& c;
    ~Unclaim() { c.unclaim(); }
  } unclaim{c};
  // A job that kills its worker at once may fail the healed runtime again
  // before this returns: each turn counts a try, so this ends.
  while (c.failed.load()) {
    std::shared_ptr<JobBatch> b = c.batch;
    int64_t culprit = -1;
    const Recovery r = recover_jobs(c, what, &culprit);
    if (r == Recovery::gave_up) (void)saved_result(*b, static_cast<uint64_t>(culprit));  // throws its error
    if (r == Recovery::none) return false;
  }
  return true;
}

std::span<const uint8_t> batch_result(const std::shared_ptr<JobBatch>& bp, uint64_t i) {
  JobBatch& b = *bp;
  if (!b.finished.load(std::memory_order_acquire)) {
    std::shared_ptr<RuntimeCore> owner = b.owner.lock();
    if (!owner) throw ArgumentError("Future::get: the runtime is gone");
    RuntimeCore& c = *owner;
    // A failed runtime is let through: its jobs may heal it (below).
    if (!c.usable() && !(c.open && c.failed.load() && self_pid() == c.master_pid)) c.check_usable("Future::get");
    Busy busy(c, "Future::get", true);
    // close() or another call of another thread may have finished the
    // batch before this one claimed the runtime; a failure may have
    // settled this job.
    for (;;) {
      if (b.finished.load() || (i < b.saved.size() && b.saved[i].state)) break;
      if (c.failed.load()) {
        if (recover_jobs(c, "Future::get") != Recovery::none) continue;
        if (b.finished.load() || (i < b.saved.size() && b.saved[i].state)) break;
        c.check_usable("Future::get");  // the failure, as without retries
      }
      if (!c.usable()) c.check_usable("Future::get");
      if (b.stream->parked) {
        unpark(c);
        continue;
      }
      JobStream& st = *b.stream;
      trace::Span span(trace::Kind::map, st.call);
      JobEnv& e = st.env;
      int64_t last = comm::monotonic_ns();
      try {
        for (;;) {
          const uint8_t state = at(e.state(i)).load(std::memory_order_seq_cst);
          if (state & kDone) return live_result(e, c, i);
          if (state & kFailed)
            throw_job_error("Future::get", i, static_cast<int>(e.infos()[i].rank), job_error(e, c, i));
          if (run_some(st)) continue;
          const uint32_t g = at(e.s->done_gen).load(std::memory_order_seq_cst);
          if (at(e.state(i)).load(std::memory_order_seq_cst) & (kDone | kFailed)) continue;
          wait_done(st, g, last);
        }
      } catch (const WorkerError&) {
        // A job's own exception, or a failure with no retries: as before.
        if (!c.failed.load() || st.tries.empty()) throw;
      }
    }
  }
  return saved_result(b, i);
}

bool batch_ready(const std::shared_ptr<JobBatch>& bp, uint64_t i) {
  const JobBatch& b = *bp;
  if (b.finished.load(std::memory_order_acquire)) return true;
  if (i < b.saved.size() && b.saved[i].state) return true;
  if (!b.stream || b.stream->parked) return false;
  return (at(b.stream->env.state(i)).load() & (kDone | kFailed)) != 0;
}

// ---- per-rank storage --------------------------------------------------------------------

namespace {
struct RankLocal {
  void* p;
  void (*destroy)(void*);
};
std::unordered_map<std::type_index, RankLocal>& locals() {
  static std::unordered_map<std::type_index, RankLocal> m;
  return m;
}
}  // namespace

void* rank_local(std::type_index key, void* (*make)(), void (*destroy)(void*)) {
  auto& m = locals();
  auto it = m.find(key);
  if (it != m.end()) return it->second.p;
  void* p = make();
  m.emplace(key, RankLocal{p, destroy});
  return p;
}

void clear_rank_locals() noexcept {
  for (auto& [k, v] : locals()) v.destroy(v.p);
  locals().clear();
}

}  // namespace detail

// ---- JobContext ---------------------------------------------------------------------------

int JobContext::rank() const { return env_->rank; }
int JobContext::ranks() const { return env_->ranks; }
void JobContext::lock_critical() {
  if (env_->in_critical) throw ArgumentError("JobContext::critical: already inside a critical section (not re-entrant)");
  env_->lock_critical();
}
void JobContext::unlock_critical() noexcept { env_->unlock_critical(); }

void JobContext::enter_ordered() {
  detail::JobEnv& e = *env_;
  if (std::atomic_ref<uint8_t>(e.state(job_)).load() & detail::kPassed)
    throw ArgumentError("JobContext::ordered: job " + std::to_string(job_) +
                        " entered an ordered section twice (at most once per job)");
  auto next = std::atomic_ref<uint64_t>(e.s->ordered_next);
  // Counted as a waiter throughout, so that every rank finishing a job
  // moves ordered_next on for us (JobEnv::run_chunk).
  auto waiters = std::atomic_ref<uint32_t>(e.s->ordered_waiters);
  waiters.fetch_add(1, std::memory_order_seq_cst);
  struct Leave {
    std::atomic_ref<uint32_t> w;
    ~Leave() { w.fetch_sub(1, std::memory_order_seq_cst); }
  } leave{waiters};
  const int64_t since = comm::monotonic_ns();
  for (;;) {
    const uint32_t g = std::atomic_ref<uint32_t>(e.s->ordered_gen).load(std::memory_order_seq_cst);
    e.advance_ordered();
    if (next.load(std::memory_order_seq_cst) == job_) return;
    e.check_wait("JobContext::ordered", since);
    e.sleep_on(&e.s->ordered_gen, g, &e.s->ordered_waiters);
  }
}
void JobContext::leave_ordered() noexcept { env_->pass_ordered(job_); }

void* JobContext::resolve(const DataRef& d, DType want, int64_t first, int64_t& count) const {
  if (d.dtype != want)
    throw TypeError(std::string("JobContext::rows: the Data has dtype ") + dtype_name(d.dtype) + ", asked for " +
                    dtype_name(want));
  if (d.rows < 0 || d.row_elems < 0)
    throw ArgumentError("JobContext::rows: a DataRef with " + std::to_string(d.rows) + " rows of " +
                        std::to_string(d.row_elems) + " elements");
  if (count < 0) count = d.rows - first;
  if (first < 0 || count < 0 || first > d.rows || count > d.rows - first)
    throw ArgumentError("JobContext::rows: rows [" + std::to_string(first) + ", " + std::to_string(first) + " + " +
                        std::to_string(count) + ") of a Data with " + std::to_string(d.rows) + " rows");
  std::span<uint8_t> m = env_->seg(d.segment);
  // rows * row_elems * 4 may not fit in 64 bits (a forged DataRef): compare
  // by division, which cannot overflow.
  const uint64_t row_bytes = static_cast<uint64_t>(d.row_elems) * 4;  // row_elems < 2^63
  if (row_bytes / 4 != static_cast<uint64_t>(d.row_elems) ||
      (row_bytes != 0 && static_cast<uint64_t>(d.rows) > m.size() / row_bytes))
    throw ArgumentError("JobContext::rows: the DataRef says " + std::to_string(d.rows) + " rows of " +
                        std::to_string(d.row_elems) + " elements, more than its Data's segment of " +
                        std::to_string(m.size()) + " bytes holds");
  return m.data() + static_cast<uint64_t>(first) * row_bytes;
}

DataRef Data::ref() const {
  const Impl& d = checked("ref");
  // A job carrying it would name a segment no rank holds any more.
  detail::check_data_open(d, "Data::ref");
  DataRef r;
  r.segment = d.id;
  r.dtype = d.dtype;
  r.rows = d.shape.empty() ? 1 : d.shape[0];
  r.row_elems = d.shape.empty() ? 1 : numel(Shape(d.shape.begin() + 1, d.shape.end()));
  return r;
}

// ---- Runtime ------------------------------------------------------------------------------

using detail::JobEnv;
using detail::JobStream;
using detail::RuntimeCore;

namespace detail {
namespace {

// run_jobs on this node's ranks; jobs are numbered from index_base in
// messages (a node's block of a multi-node map). `settled` (tracked jobs
// only): per job, nonzero for a job whose result was delivered in an
// earlier try; the workers pass it by and it is not delivered again.
void run_jobs_here(RuntimeCore& c, JobThunk thunk, uint64_t fn, const uint8_t* jobs, const uint64_t* offsets,
                   size_t count, size_t result_slot, bool in_order, const Runtime::JobSink& sink, const char* what,
                   const JobsFast& fast, uint64_t index_base, bool track = false, const uint8_t* settled = nullptr) {
  void* direct_out = fast.direct_out;
  const uint64_t first = offsets ? offsets[0] : 0;
  const uint64_t bytes = offsets ? offsets[count] - offsets[0] : count * fast.stride;
  // Jobs of one size need no records.
  const uint64_t stride = offsets ? offsets[1] - offsets[0] : fast.stride;
  bool uniform = true;
  if (offsets)
    for (size_t i = 1; i <= count && uniform; ++i) uniform = offsets[i] - offsets[0] == i * stride;
  detail::JobRec one{};
  if (uniform) one = {reinterpret_cast<uint64_t>(thunk), fn, offsets ? 0 : reinterpret_cast<uint64_t>(fast.chunk), stride};
  // Tracked jobs run on the workers only: a job that may kill its process
  // must never run in the master, the one process the runtime cannot lose.
  track = track && c.n > 1;
  std::shared_ptr<JobStream> st = detail::open_stream(c, count, bytes, result_slot, what, one, !in_order, track);
  trace::Span span(trace::Kind::map, st->call);  // the master's jobs, its folding and waiting
  JobEnv& e = st->env;
  // Every job at once: the bytes (and records), then one publish.
  if (bytes) std::memcpy(e.base + e.t.bytes_off, jobs + first, bytes);
  if (!uniform) {
    detail::JobRec* recs = e.recs();
    for (size_t i = 0; i < count; ++i)
      recs[i] = {reinterpret_cast<uint64_t>(thunk), fn, offsets[i] - offsets[0], offsets[i + 1] - offsets[i]};
  }
  if (settled && track)
    for (size_t i = 0; i < count; ++i)
      if (settled[i]) e.state(i) = detail::kDone | detail::kPassed;  // (JobTable::track) passed by, in order too
  st->published = count;
  st->bytes_used = bytes;
  std::atomic_ref<uint64_t>(e.s->published).store(count, std::memory_order_seq_cst);
  std::atomic_ref<uint32_t>(e.s->closed).store(1, std::memory_order_seq_cst);
  e.bump(&e.s->pub_gen, &e.s->pub_sleepers);

  // The master runs jobs too, and folds what has arrived between them.
  uint64_t folded = 0;          // ring entries (or job indices, in order) delivered
  uint64_t first_failed = count;
  std::string sink_error;
  std::exception_ptr sink_exc;
  auto deliver = [&](uint64_t i) {
    if (settled && settled[i]) return;
    const uint8_t s = std::atomic_ref<uint8_t>(e.state(i)).load(std::memory_order_acquire);
    if (s & detail::kFailed) {
      first_failed = std::min<uint64_t>(first_failed, i);
      return;
    }
    if (!sink || sink_exc) return;
    try {
      sink(i, detail::live_result(e, c, i));
    } catch (...) {
      sink_exc = std::current_exception();
      // Take no more jobs; the ones running finish.
      std::atomic_ref<uint32_t>(e.s->cancel).store(1, std::memory_order_seq_cst);
      e.bump(&e.s->pub_gen, &e.s->pub_sleepers);
    }
  };
  auto fold_arrived = [&] {
    if (fast.chunk) return;  // the fast path: results copied at the end, no sink
    if (in_order) {
      while (folded < count && (std::atomic_ref<uint8_t>(e.state(folded)).load(std::memory_order_acquire) &
                                (detail::kDone | detail::kFailed)))
        deliver(folded++);
    } else {
      const uint64_t done = std::atomic_ref<uint64_t>(e.s->done_count).load(std::memory_order_acquire);
      while (folded < done) {
        uint64_t v;
        while ((v = std::atomic_ref<uint64_t>(e.ring()[folded]).load(std::memory_order_acquire)) == 0) comm::cpu_relax();
        deliver(v - 1);
        ++folded;
      }
    }
  };
  // A failed runtime (a dead or stuck rank) throws out of wait_done; the
  // runtime is unusable then and close() ends the command.
  int64_t last = comm::monotonic_ns();
  {
    for (;;) {
      fold_arrived();
      if (!sink_exc && !track && detail::run_some(*st)) continue;
      const uint32_t g = std::atomic_ref<uint32_t>(e.s->done_gen).load(std::memory_order_seq_cst);
      const uint64_t done = std::atomic_ref<uint64_t>(e.s->done_count).load(std::memory_order_seq_cst);
      if (sink_exc) {
        // Cancelled: wait only for the jobs that were taken.
        const uint64_t taken = std::min<uint64_t>(count, std::atomic_ref<uint64_t>(c.cb->map_next).load());
        if (done >= taken) break;
      } else if (fast.chunk ? done >= count : folded >= count) {
        break;
      }
      if (!sink_exc && done >= count) continue;  // the last ones are being folded
      detail::wait_done(*st, g, last);
    }
  }
  st->open = false;
  if (st->signalled) {
    st->signalled = false;
    c.wait_workers(what);
  }
  if (sink_exc) std::rethrow_exception(sink_exc);
  if (fast.chunk) {
    // The fast path (JobsFast): every result is in its slot; a failed job
    // is the only one whose state may say so.
    for (uint64_t i = 0; i < count; ++i)
      if (std::atomic_ref<uint8_t>(e.state(i)).load(std::memory_order_relaxed) & detail::kFailed) {
        first_failed = i;
        break;
      }
    if (first_failed == count && direct_out && count * result_slot != 0)
      std::memcpy(direct_out, e.slot(0), count * result_slot);
  }
  if (first_failed < count)
    detail::throw_job_error(std::string("Runtime::") + what, index_base + first_failed,
                            c.base + static_cast<int>(e.infos()[first_failed].rank), detail::job_error(e, c, first_failed));
}

// run_jobs_here with retries (one node, workers): every try publishes the
// whole table again, the jobs whose results were delivered marked settled
// (passed by), so that a job that runs again has its own index
// (JobContext::job(), ordered sections); when the runtime fails in a try
// (a rank died or hung), heal() replaces the workers and the next try
// begins. A job's own exception is its error as without retries. Jobs run
// at least once: a job whose rank died after it finished, before its
// result was delivered, runs again.
void run_jobs_retrying(RuntimeCore& c, JobThunk thunk, uint64_t fn, const uint8_t* jobs, const uint64_t* offsets,
                       size_t count, size_t result_slot, bool in_order, const Runtime::JobSink& sink, const char* what,
                       const JobsFast& fast, int retries) {
  std::vector<uint8_t> got(count, 0);
  std::vector<int> lost(count, 0);  // tries in which the job's rank was lost while running it
  uint8_t* direct = static_cast<uint8_t*>(fast.direct_out);
  // The jobs as they lie, one at a time (no chunk runner: each is noted).
  const JobsFast plain{offsets ? 0 : fast.stride, nullptr, nullptr};
  auto deliver = [&](uint64_t i, std::span<const uint8_t> r) {
    got[i] = 1;
    if (direct) std::memcpy(direct + i * result_slot, r.data(), std::min<size_t>(r.size(), result_slot));
    else if (sink) sink(i, r);
  };
  for (int attempt = 0;; ++attempt) {
    try {
      run_jobs_here(c, thunk, fn, jobs, offsets, count, result_slot, in_order, deliver, what, plain, 0, true,
                    got.data());
      return;
    } catch (const WorkerError&) {
      if (!c.failed.load()) throw;  // a job's exception, not a lost rank
    }
    std::string cause;
    int dead = -1;
    {
      std::lock_guard<std::mutex> lk(c.fail_mu);
      cause = c.fail_msg;
      dead = c.fail_rank;
    }
    // The job the lost rank was running, if it had not finished it.
    int64_t held = -1;
    if (dead > 0 && dead < c.n) {
      const uint64_t j = std::atomic_ref<uint64_t>(c.cb->slots[dead].job).load(std::memory_order_seq_cst);
      if (j > 0 && j - 1 < count && !got[j - 1]) held = static_cast<int64_t>(j - 1);
    }
    if (held >= 0) ++lost[static_cast<size_t>(held)];
    if (attempt >= retries) {
      const std::string tries = std::to_string(attempt + 1) + (attempt == 0 ? " try" : " tries");
      throw WorkerError(
          "synk runtime: Runtime::" + std::string(what) + " failed after " + tries + ": " +
              (held >= 0 ? "job " + std::to_string(held) + " was running on rank " + std::to_string(dead) +
                               " when it was lost (the job lost its rank in " +
                               std::to_string(lost[static_cast<size_t>(held)]) + " of " + tries + "): "
                         : std::string()) +
              cause,
          dead);
    }
    c.heal(what);
  }
}

// A map over several nodes: node k runs a contiguous block of the jobs on
// its ranks (balanced inside the node), then the masters exchange every
// job's result (or the first failure), and each delivers all of them in
// job order: every node gets the same results.
void run_jobs_nodes(RuntimeCore& c, JobThunk thunk, uint64_t fn, const uint8_t* jobs, const uint64_t* offsets,
                    size_t count, size_t result_slot, const Runtime::JobSink& sink, const char* what,
                    const JobsFast& fast) {
  int64_t lo = 0, mine = 0;
  split_rows(static_cast<int64_t>(count), c.nodes, c.node, lo, mine);
  // (not fn: a function's address differs between processes)
  c.agree("map", count, static_cast<uint64_t>(result_slot), std::string(what) + " of " +
          std::to_string(count) + " jobs");
  std::string err;
  std::vector<uint8_t> direct;
  try {
    if (mine > 0) {
      if (fast.chunk) {
        JobsFast f = fast;
        direct.resize(static_cast<size_t>(mine) * result_slot);
        f.direct_out = fast.direct_out ? direct.data() : nullptr;
        run_jobs_here(c, thunk, fn, jobs + static_cast<size_t>(lo) * fast.stride, nullptr, static_cast<size_t>(mine),
                      result_slot, true, sink, what, f, static_cast<uint64_t>(lo));
      } else {
        Writer w;
        run_jobs_here(c, thunk, fn, jobs, offsets ? offsets + lo : nullptr, static_cast<size_t>(mine), result_slot,
                      true, [&w](uint64_t, std::span<const uint8_t> r) { append_job_result(w, r); }, what, fast,
                      static_cast<uint64_t>(lo));
        direct = std::move(w.buf);
      }
    }
  } catch (const std::exception& e) {
    if (c.failed.load()) {
      c.notify_nodes();
      throw;
    }
    err = e.what();
  }
  const std::vector<uint8_t> blob = encode_job_results(err, direct);
  std::vector<size_t> sizes;
  const std::vector<uint8_t> all =
      c.over_link(what, [&] { return c.link->all_gather_bytes(blob, &sizes, "the exchange of job results"); });
  if (sizes.size() != static_cast<size_t>(c.nodes))
    throw FormatError("synk runtime: " + std::string(what) + ": job results from " + std::to_string(sizes.size()) +
                      " nodes, expected " + std::to_string(c.nodes));
  // The first failure (in job order) is every node's error.
  size_t off = 0;
  std::vector<std::span<const uint8_t>> parts;  // each node's results
  for (size_t k = 0; k < sizes.size(); ++k) {
    if (off > all.size() || sizes[k] > all.size() - off)
      throw FormatError("synk runtime: " + std::string(what) + ": the job results of node " + std::to_string(k) +
                        " lie outside the bytes received");
    JobResults j = decode_job_results(all.data() + off, sizes[k], static_cast<int>(k));
    if (!j.error.empty()) throw WorkerError(j.error, -1);
    parts.push_back(j.results);
    off += sizes[k];
  }
  // Node k ran its block of the jobs: its results must be that many.
  auto jobs_of = [&](size_t k) {
    int64_t first = 0, n = 0;
    split_rows(static_cast<int64_t>(count), c.nodes, static_cast<int>(k), first, n);
    return static_cast<uint64_t>(n);
  };
  auto refuse = [&](size_t k, uint64_t got) {
    throw FormatError("synk runtime: " + std::string(what) + ": node " + std::to_string(k) + " sent " +
                      std::to_string(got) + " job results, expected " + std::to_string(jobs_of(k)));
  };
  if (fast.chunk) {
    for (size_t k = 0; k < parts.size(); ++k)
      if (parts[k].size() != jobs_of(k) * result_slot) refuse(k, result_slot ? parts[k].size() / result_slot : 0);
    uint8_t* out = static_cast<uint8_t*>(fast.direct_out);
    for (std::span<const uint8_t> p : parts) {
      if (out && !p.empty()) std::memcpy(out, p.data(), p.size());
      if (out) out += p.size();
    }
    return;
  }
  // Every node's results are checked before the first is delivered.
  for (size_t k = 0; k < parts.size(); ++k)
    if (const uint64_t got = read_job_results(parts[k], [](std::span<const uint8_t>) {}); got != jobs_of(k))
      refuse(k, got);
  uint64_t i = 0;
  for (std::span<const uint8_t> p : parts)
    read_job_results(p, [&](std::span<const uint8_t> r) {
      if (sink) sink(i, r);
      ++i;
    });
}

}  // namespace
}  // namespace detail

void Runtime::run_jobs(detail::JobThunk thunk, uint64_t fn, const uint8_t* jobs, const uint64_t* offsets, size_t count,
                       size_t result_slot, bool in_order, const JobSink& sink, const char* what,
                       const detail::JobsFast& fast, int retries) {
  RuntimeCore& c = checked(what);
  detail::Busy busy(c, what);
  if (retries < 0)
    throw ArgumentError(std::string("Runtime::") + what + ": retries must be >= 0, got " + std::to_string(retries));
  if (count == 0) return;
  if (!thunk) throw ArgumentError(std::string("Runtime::") + what + ": no function");
  if (!offsets && !fast.stride) throw ArgumentError(std::string("Runtime::") + what + ": no job offsets or size");
  if (retries > 0 && c.multi())
    throw ArgumentError(std::string("Runtime::") + what +
                        ": retries need a runtime of one node (a rank lost on one node fails every node)");
  if (retries > 0 && c.n > 1)
    return detail::run_jobs_retrying(c, thunk, fn, jobs, offsets, count, result_slot, in_order, sink, what, fast,
                                     retries);
  if (c.multi() && !c.jobs_here)
    return detail::run_jobs_nodes(c, thunk, fn, jobs, offsets, count, result_slot, sink, what, fast);
  detail::run_jobs_here(c, thunk, fn, jobs, offsets, count, result_slot, in_order, sink, what, fast, 0);
}

std::shared_ptr<detail::JobBatch> Runtime::submit(detail::JobThunk thunk, uint64_t fn, const uint8_t* job,
                                                  size_t job_bytes, size_t result_slot, uint64_t& index, int retries,
                                                  const char* what) {
  RuntimeCore& c = checked(what);
  detail::Busy busy(c, what, true);
  if (!thunk) throw ArgumentError(std::string("Runtime::") + what + ": no function");
  if (retries < 0)
    throw ArgumentError(std::string("Runtime::") + what + ": retries must be >= 0, got " + std::to_string(retries));
  if (retries > 0 && c.multi())
    throw ArgumentError(std::string("Runtime::") + what +
                        ": retries need a runtime of one node (a rank lost on one node fails every node)");
  constexpr uint64_t kCapacity = 1 << 16, kBytes = uint64_t{64} << 20, kSlot = 64;
  if (c.stream && c.stream->parked) detail::unpark(c);  // jobs kept by a heal go first
  if (c.stream && (!detail::has_room(*c.stream, job_bytes) || result_slot > c.stream->env.t.result_slot))
    detail::finish_jobs(c);
  if (!c.stream) {
    auto b = std::make_shared<detail::JobBatch>();
    b->owner = impl_;
    b->c = &c;
    // Tracked (JobTable::track): a job with retries may come at any time.
    c.stream = detail::open_stream(c, kCapacity, std::max<uint64_t>(kBytes, job_bytes),
                                   std::max<uint64_t>(kSlot, result_slot), "apply_async", {}, false, true);
    b->stream = c.stream;
    c.batch = std::move(b);
  }
  JobStream& st = *c.stream;
  index = st.published;
  // With one rank the master runs every job: nothing to retry on.
  if ((retries > 0 && c.n > 1) || !st.tries.empty()) {
    st.tries.resize(index);
    st.tries.push_back({retries, 0, 0, what});
    if (retries > 0) st.workers_only = true;  // before the job is published
  }
  detail::push(st, thunk, fn, job, job_bytes);
  return c.batch;
}

void Runtime::join() {
  RuntimeCore& c = checked("join");
  detail::Busy busy(c, "join", true);
  detail::finish_jobs(c);
}

}  // namespace synk
