// src/comm/cpu_group.cpp — the shared-memory collective protocol (see
// cpu_group.hpp for the design; this file is the step/piece bookkeeping).
//
// Protocol invariants (every collective follows them, so they can be mixed
// freely and need no barrier between them):
//  * Work is cut into pieces; g counts pieces since the group was created and
//    is the same on every rank. Piece g uses buffer set g % 2.
//  * After writing its staging for piece g a rank stores step = 2g+1 (release)
//    in its own control line; after a second phase (reduce-scatter) 2g+2.
//    Steps only grow (compared modulo 2^32), so a waiter for 2g+2 is also
//    satisfied by a later 2g+3.
//  * A rank reads peers' piece-g data only after seeing their step >= 2g+1
//    (or 2g+2), and before it publishes 2(g+1)+1.
//  * Before writing set g % 2 again (piece g), a rank waits until every peer's
//    step >= 2g-1, i.e. every peer has finished reading piece g-2. In the
//    symmetric collectives this was already observed during piece g-1, so the
//    check costs a few loads; a broadcast root is held at most one piece ahead.
#include "comm/cpu_group.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>

#include "comm/futex.hpp"
#include "comm/reduce_kernels.hpp"

namespace synk::comm {

// ---- element types ----------------------------------------------------------------

size_t elem_size(ElemType t) noexcept {
  return (t == ElemType::f64 || t == ElemType::i64) ? 8 : 4;
}
const char* elem_name(ElemType t) noexcept {
  switch (t) {
    case ElemType::f32: return "f32";
    case ElemType::i32: return "i32";
    case ElemType::f64: return "f64";
    case ElemType::i64: return "i64";
  }
  return "?";
}
const char* redop_name(ReduceOp op) noexcept {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::avg: return "avg";
    case ReduceOp::max: return "max";
    case ReduceOp::min: return "min";
    case ReduceOp::prod: return "prod";
  }
  return "?";
}
ElemType elem_type(DType t) {
  switch (t) {
    case DType::f32: return ElemType::f32;
    case DType::i32: return ElemType::i32;
  }
  throw ArgumentError("comm: unsupported dtype " + std::to_string(static_cast<int>(t)));
}

// ---- shared layout ------------------------------------------------------------------

enum class CpuGroup::Coll : uint8_t {
  all_reduce = 1, reduce, broadcast, all_gather, gather, scatter, exchange, barrier
};

namespace {

const char* coll_name(uint8_t c) {
  static const char* names[] = {"?", "all_reduce", "reduce", "broadcast", "all_gather",
                                "gather", "scatter", "all_gather_u64", "barrier"};
  return c < std::size(names) ? names[c] : "?";
}

constexpr uint64_t kMagic = 0x73796e6b636f6d31ull;  // "synkcom1"
constexpr size_t kHeaderBytes = 1024;
constexpr size_t kReasonBytes = 768;

template <class T> std::atomic_ref<T> at(T& x) { return std::atomic_ref<T>(x); }

// Steps are compared modulo 2^32 so the counters may wrap.
inline bool reached(uint32_t have, uint32_t want) {
  return static_cast<int32_t>(have - want) >= 0;
}

inline void copy_bytes(void* dst, const void* src, size_t n) {
  if (n && dst != src) std::memcpy(dst, src, n);
}

// Copies into the caller's (private) output; non-temporal when `stream`.
inline void copy_out(void* dst, const void* src, size_t n, bool stream) {
  if (!n || dst == src) return;
  if (stream) kernels::stream_copy(dst, src, n);
  else std::memcpy(dst, src, n);
}

// Orders the non-temporal stores of a collective before it returns.
struct StreamFence {
  bool on;
  ~StreamFence() {
    if (on) kernels::stream_fence();
  }
};

}  // namespace

// What a rank is doing in a piece; peers compare it to catch ranks that call
// different collectives (or different counts) instead of hanging.
struct CpuGroup::Desc {
  uint8_t coll = 0, type = 0, op = 0, pad = 0;
  int32_t root = -1;
  uint32_t seq = 0, pad2 = 0;
  uint64_t count = 0;
  bool operator==(const Desc& o) const {
    return coll == o.coll && type == o.type && op == o.op && root == o.root && seq == o.seq &&
           count == o.count;
  }
};

struct CpuGroup::Header {
  uint64_t magic;
  int32_t ranks;
  uint32_t aborted;      // atomic; 1 once reason is written
  uint32_t abort_claim;  // atomic; first aborter wins
  int32_t abort_rank;  // who aborted
  int32_t blame_rank;  // whom the abort blames
  char reason[kReasonBytes];
};

// One per rank, on its own pair of cache lines (the adjacent-line prefetcher
// would otherwise make neighbours share).
struct alignas(128) CpuGroup::RankCtl {
  uint32_t step;     // atomic, futex word: the last published step
  uint32_t waiters;  // atomic: processes sleeping on step
  int32_t pid;       // atomic: the bound process
  uint32_t pad;
  Desc desc[2];      // per buffer set
  uint64_t value[2]; // all_gather_u64, per buffer set
};

CpuGroup::Header* CpuGroup::header() const noexcept {
  return static_cast<Header*>(seg_.data());
}
CpuGroup::RankCtl* CpuGroup::ctl(int r) const noexcept {
  return reinterpret_cast<RankCtl*>(static_cast<std::byte*>(seg_.data()) + kHeaderBytes) + r;
}
std::byte* CpuGroup::slot(int set, int r) const noexcept {
  size_t data_off = (kHeaderBytes + sizeof(RankCtl) * n_ + 4095) & ~size_t(4095);
  return static_cast<std::byte*>(seg_.data()) + data_off +
         (static_cast<size_t>(set) * n_ + r) * slot_bytes_;
}

// ---- setup ------------------------------------------------------------------------------

namespace {
size_t group_bytes(int n, size_t slot_bytes, size_t header_bytes, size_t ctl_bytes) {
  const size_t data_off = (header_bytes + ctl_bytes * static_cast<size_t>(n) + 4095) & ~size_t(4095);
  return data_off + 2 * static_cast<size_t>(n) * slot_bytes;
}
}  // namespace

void CpuGroup::init_geometry() {
  if (n_ < 1 || n_ > kMaxRanks)
    throw ArgumentError("CpuGroup: ranks must be in [1, " + std::to_string(kMaxRanks) + "], got " +
                        std::to_string(n_));
  static_assert(sizeof(Header) <= kHeaderBytes);
  static_assert(sizeof(RankCtl) == 128);
  if (opts_.timeout.count() <= 0) throw ArgumentError("CpuGroup: timeout must be positive");
  // At least 4 KiB (one page) and a multiple of it, so every slot starts
  // page- and cache-line aligned.
  slot_bytes_ = std::max<size_t>(4096, (opts_.slot_bytes + 4095) & ~size_t(4095));
  spin_ns_ = std::max<int64_t>(0, opts_.spin.count());
  // Oversubscribed (more ranks than CPUs): a spinning waiter only delays the
  // peer it waits for, so go to sleep almost at once.
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus > 0 && n_ > cpus) spin_ns_ = std::min<int64_t>(spin_ns_, 2000);
}

CpuGroup::CpuGroup(const CpuGroupOptions& opts, SharedSegment&& seg) : opts_(opts), n_(opts.ranks) {
  init_geometry();
  const size_t want = group_bytes(n_, slot_bytes_, kHeaderBytes, sizeof(RankCtl));
  seg_ = std::move(seg);
  if (!seg_ || seg_.size() != want || header()->magic != kMagic || header()->ranks != n_)
    throw BackendError("CpuGroup: the received segment (" + std::to_string(seg_.size()) +
                       " bytes) is not a group of " + std::to_string(n_) + " ranks (" + std::to_string(want) +
                       " bytes)");
}

CpuGroup::CpuGroup(const CpuGroupOptions& opts) : opts_(opts), n_(opts.ranks) {
  init_geometry();
  seg_ = SharedSegment::create(group_bytes(n_, slot_bytes_, kHeaderBytes, sizeof(RankCtl)), "synk-cpu-group");
  Header* h = header();
  h->magic = kMagic;
  h->ranks = n_;
  // Fault the staging pages in once here rather than in every worker.
  std::memset(slot(0, 0), 0, 2 * static_cast<size_t>(n_) * slot_bytes_);
}

void CpuGroup::bind(int rank) {
  if (!seg_) throw ArgumentError("CpuGroup::bind: the group was moved from");
  if (rank < 0 || rank >= n_)
    throw ArgumentError("CpuGroup::bind: rank " + std::to_string(rank) + " out of range [0, " +
                        std::to_string(n_) + ")");
  const int32_t me = static_cast<int32_t>(::getpid());
  if (rank_ >= 0 && rank_ != rank && at(ctl(rank_)->pid).load() == me)
    throw ArgumentError("CpuGroup::bind: this process is already rank " + std::to_string(rank_));
  int32_t cur = at(ctl(rank)->pid).load();
  while (cur != me) {
    // A previous owner that no longer exists (e.g. an exited worker) may be replaced.
    if (cur != 0 && ::kill(cur, 0) == 0)
      throw ArgumentError("CpuGroup::bind: rank " + std::to_string(rank) +
                          " is already bound by pid " + std::to_string(cur));
    if (at(ctl(rank)->pid).compare_exchange_weak(cur, me)) break;
  }
  rank_ = rank;
}

void CpuGroup::check_bound(const char* what) const {
  if (rank_ < 0)
    throw ArgumentError(std::string("CpuGroup::") + what + ": bind(rank) was not called in this process");
  Header* h = header();
  if (at(h->aborted).load(std::memory_order_acquire))
    throw BackendError("synk comm: rank " + std::to_string(rank_) + ": " + what +
                       " refused: the group was aborted (" + abort_reason() + ")");
}

void CpuGroup::check_root(int root, const char* what) const {
  if (root < 0 || root >= n_)
    throw ArgumentError(std::string("CpuGroup::") + what + ": root " + std::to_string(root) +
                        " out of range [0, " + std::to_string(n_) + ")");
}

void CpuGroup::check_same(size_t a, size_t b, const char* what) {
  if (a != b)
    throw ArgumentError(std::string("CpuGroup::") + what + ": input has " + std::to_string(a) +
                        " elements but output " + std::to_string(b));
}

// ---- abort ------------------------------------------------------------------------------

void CpuGroup::abort(std::string_view reason, int blame) noexcept {
  if (!seg_) return;
  Header* h = header();
  uint32_t expected = 0;
  if (at(h->abort_claim).compare_exchange_strong(expected, 1)) {
    size_t n = std::min(reason.size(), kReasonBytes - 1);
    std::memcpy(h->reason, reason.data(), n);
    h->reason[n] = '\0';
    h->abort_rank = rank_;
    h->blame_rank = blame >= 0 && blame < n_ ? blame : rank_;
    at(h->aborted).store(1, std::memory_order_seq_cst);
  }
  // Wake every sleeper; a waiter that checked the flag just before it was
  // set and then sleeps is caught by the bounded sleep slices in wait_peer.
  for (int r = 0; r < n_; ++r) futex_wake(&ctl(r)->step);
}

void CpuGroup::reset() noexcept {
  if (!seg_) return;
  Header* h = header();
  at(h->aborted).store(0, std::memory_order_seq_cst);
  at(h->abort_claim).store(0, std::memory_order_seq_cst);
  h->abort_rank = -1;
  h->blame_rank = -1;
  h->reason[0] = '\0';
  for (int r = 0; r < n_; ++r) {
    RankCtl* c = ctl(r);
    const int32_t pid = r == rank_ ? at(c->pid).load() : 0;
    std::memset(static_cast<void*>(c), 0, sizeof *c);
    at(c->pid).store(pid, std::memory_order_seq_cst);
  }
  piece_ = 0;
  op_seq_ = 0;
}

bool CpuGroup::aborted() const noexcept {
  return seg_ && at(header()->aborted).load(std::memory_order_acquire) != 0;
}

int CpuGroup::blamed_rank() const noexcept {
  return aborted() ? header()->blame_rank : -1;
}

std::string CpuGroup::abort_reason() const {
  if (!aborted()) return {};
  const Header* h = header();
  return std::string(h->reason, strnlen(h->reason, kReasonBytes));
}

// ---- the piece protocol --------------------------------------------------------------------

[[noreturn]] void CpuGroup::fail(const Desc& d, const std::string& what, int blame) {
  std::string msg = "synk comm: rank " + std::to_string(rank_) + " (pid " +
                    std::to_string(::getpid()) + "): " + coll_name(d.coll) + "(count=" +
                    std::to_string(d.count) + ", " + elem_name(static_cast<ElemType>(d.type));
  if (d.coll == static_cast<uint8_t>(Coll::all_reduce) || d.coll == static_cast<uint8_t>(Coll::reduce))
    msg += std::string(", ") + redop_name(static_cast<ReduceOp>(d.op));
  if (d.root >= 0) msg += ", root=" + std::to_string(d.root);
  msg += ") #" + std::to_string(d.seq) + ": " + what;
  abort(msg, blame);
  throw BackendError(msg);
}

void CpuGroup::publish(uint32_t step) noexcept {
  RankCtl* c = ctl(rank_);
  at(c->step).store(step, std::memory_order_seq_cst);
  // Pairs with the waiter's seq_cst increment of `waiters` then re-load of
  // `step`: either it sees the new step or we see it waiting.
  if (at(c->waiters).load(std::memory_order_seq_cst) != 0) futex_wake(&c->step);
}

void CpuGroup::wait_peer(int peer, uint32_t target, const Desc& d, bool check_desc) {
  RankCtl* c = ctl(peer);
  auto step = at(c->step);
  if (!reached(step.load(std::memory_order_acquire), target)) {
    Header* h = header();
    auto is_aborted = [&] { return at(h->aborted).load(std::memory_order_acquire) != 0; };
    auto aborted_error = [&] {
      return "group aborted while waiting for rank " + std::to_string(peer) + ": " + abort_reason();
    };
    const int64_t start = monotonic_ns();
    bool ok = false;
    // Spin: a peer on another core usually arrives within a microsecond.
    for (uint32_t i = 1;; ++i) {
      cpu_relax();
      if (reached(step.load(std::memory_order_acquire), target)) { ok = true; break; }
      if ((i & 63) == 0) {
        if (is_aborted()) fail(d, aborted_error());
        if (monotonic_ns() - start >= spin_ns_) break;
      }
    }
    if (!ok) {
      const int64_t timeout_ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.timeout).count();
      const int64_t deadline = start + timeout_ns;
      auto waiters = at(c->waiters);
      for (;;) {
        waiters.fetch_add(1, std::memory_order_seq_cst);
        uint32_t v = step.load(std::memory_order_seq_cst);
        if (reached(v, target)) { waiters.fetch_sub(1); break; }
        if (is_aborted()) { waiters.fetch_sub(1); fail(d, aborted_error()); }
        int64_t now = monotonic_ns();
        if (now >= deadline) {
          waiters.fetch_sub(1);
          const int32_t pid = at(c->pid).load();
          fail(d, "timed out after " + std::to_string(opts_.timeout.count()) +
                      " ms waiting for rank " + std::to_string(peer) + " (pid " +
                      std::to_string(pid) + ", at step " + std::to_string(v) + ", needed " +
                      std::to_string(target) + "); the peer died, hangs or skipped this call",
               peer);
        }
        // Bounded slices: see abort().
        futex_wait(&c->step, v, std::min<int64_t>(deadline - now, 100'000'000));
        waiters.fetch_sub(1);
      }
    }
  }
  if (check_desc) {
    const Desc& theirs = c->desc[(target - 1) / 2 & 1];
    if (!(theirs == d)) {
      std::string t = std::string(coll_name(theirs.coll)) + "(count=" + std::to_string(theirs.count) +
                      ", " + elem_name(static_cast<ElemType>(theirs.type));
      if (theirs.coll == static_cast<uint8_t>(Coll::all_reduce) ||
          theirs.coll == static_cast<uint8_t>(Coll::reduce))
        t += std::string(", ") + redop_name(static_cast<ReduceOp>(theirs.op));
      if (theirs.root >= 0) t += ", root=" + std::to_string(theirs.root);
      t += ") #" + std::to_string(theirs.seq);
      fail(d, "mismatched collective: rank " + std::to_string(peer) + " called " + t +
                  "; every rank must make the same calls in the same order");
    }
  }
}

void CpuGroup::wait_all(uint32_t target, const Desc& d, bool check_desc) {
  for (int p = 0; p < n_; ++p)
    if (p != rank_) wait_peer(p, target, d, check_desc);
}

void CpuGroup::begin_piece(const Desc& d, bool check_flow) {
  const uint32_t g = piece_;
  // Flow control: every peer has finished reading piece g-2 (same buffer set).
  if (check_flow) wait_all(2 * g - 1, d, false);
  ctl(rank_)->desc[g & 1] = d;
}

// ---- collectives ---------------------------------------------------------------------------

namespace {
size_t pieces_for(size_t count, size_t per_piece) {
  return std::max<size_t>(1, (count + per_piece - 1) / per_piece);
}
}  // namespace

void CpuGroup::all_reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op) {
  reduce_impl(in, out, count, t, op, -1);
}

void CpuGroup::reduce(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root) {
  check_root(root, "reduce");
  reduce_impl(in, out, count, t, op, root);
}

void CpuGroup::reduce_impl(const void* in, void* out, size_t count, ElemType t, ReduceOp op, int root) {
  const bool all = root < 0;
  check_bound(all ? "all_reduce" : "reduce");
  const Desc d{static_cast<uint8_t>(all ? Coll::all_reduce : Coll::reduce), static_cast<uint8_t>(t),
               static_cast<uint8_t>(op), 0, root, op_seq_++, 0, count};
  const size_t es = elem_size(t);
  const bool receives = all || rank_ == root;
  if (n_ == 1) {
    if (receives) copy_bytes(out, in, count * es);
    return;
  }
  const auto* src = static_cast<const std::byte*>(in);
  auto* dst = static_cast<std::byte*>(out);
  const size_t per_piece = slot_bytes_ / es;
  const size_t K = pieces_for(count, per_piece);
  // With 2 ranks reduce-scatter moves as many bytes as reducing everything
  // everywhere but needs a second sync per piece; with more ranks direct
  // reads grow as N-1, so it only pays for small buffers.
  const bool direct = n_ == 2 || count * es <= opts_.direct_max_bytes;
  const bool stream = count * es >= opts_.stream_min_bytes;
  StreamFence fence{stream};
  const void* srcs[kMaxRanks];

  for (size_t k = 0; k < K; ++k) {
    const size_t off = k * per_piece;
    const size_t len = std::min(per_piece, count - std::min(count, off));
    const uint32_t g = piece_;
    const int set = g & 1;
    begin_piece(d, true);
    if (direct) {
      // Everyone except a reduce root (which reads its own input in place) publishes.
      if (all || rank_ != root) copy_bytes(slot(set, rank_), src + off * es, len * es);
      publish(2 * g + 1);
      if (receives) {
        wait_all(2 * g + 1, d, k == 0);
        for (int p = 0; p < n_; ++p) srcs[p] = p == rank_ ? src + off * es : slot(set, p);
        if (len) kernels::combine(dst + off * es, srcs, n_, len, t, op, stream);
      }
    } else {
      // Chunk c of the piece is reduced by rank c; bounds on cache lines so
      // no two ranks write the same line.
      const size_t epl = 64 / es;
      const size_t lines = (len + epl - 1) / epl;
      auto cb = [&](int c) { return std::min(len, lines * c / n_ * epl); };
      std::byte* mine = slot(set, rank_);
      for (int c = 0; c < n_; ++c)
        if (c != rank_) copy_bytes(mine + cb(c) * es, src + (off + cb(c)) * es, (cb(c + 1) - cb(c)) * es);
      publish(2 * g + 1);
      wait_all(2 * g + 1, d, k == 0);
      const size_t c0 = cb(rank_), cn = cb(rank_ + 1) - c0;
      for (int p = 0; p < n_; ++p) srcs[p] = p == rank_ ? src + (off + c0) * es : slot(set, p) + c0 * es;
      if (rank_ == root) {
        if (cn) kernels::combine(dst + (off + c0) * es, srcs, n_, cn, t, op, stream);
      } else {
        if (cn) kernels::combine(mine + c0 * es, srcs, n_, cn, t, op);
        if (all) copy_out(dst + (off + c0) * es, mine + c0 * es, cn * es, stream);
      }
      publish(2 * g + 2);
      if (receives) {
        for (int p = 0; p < n_; ++p) {
          if (p == rank_) continue;
          wait_peer(p, 2 * g + 2, d, false);
          copy_out(dst + (off + cb(p)) * es, slot(set, p) + cb(p) * es, (cb(p + 1) - cb(p)) * es, stream);
        }
      }
    }
    ++piece_;
  }
}

void CpuGroup::broadcast(void* buf, size_t count, ElemType t, int root) {
  check_bound("broadcast");
  check_root(root, "broadcast");
  const Desc d{static_cast<uint8_t>(Coll::broadcast), static_cast<uint8_t>(t), 0, 0, root, op_seq_++, 0, count};
  if (n_ == 1) return;
  const size_t es = elem_size(t);
  auto* b = static_cast<std::byte*>(buf);
  const bool stream = count * es >= opts_.stream_min_bytes;
  StreamFence fence{stream};
  const size_t per_piece = slot_bytes_ / es;
  const size_t K = pieces_for(count, per_piece);
  for (size_t k = 0; k < K; ++k) {
    const size_t off = k * per_piece;
    const size_t len = std::min(per_piece, count - std::min(count, off));
    const uint32_t g = piece_;
    begin_piece(d, true);
    if (rank_ == root) {
      copy_bytes(slot(g & 1, root), b + off * es, len * es);
      publish(2 * g + 1);
    } else {
      publish(2 * g + 1);
      wait_peer(root, 2 * g + 1, d, k == 0);
      copy_out(b + off * es, slot(g & 1, root), len * es, stream);
    }
    ++piece_;
  }
}

void CpuGroup::all_gather(const void* in, void* out, size_t count, ElemType t) {
  check_bound("all_gather");
  const Desc d{static_cast<uint8_t>(Coll::all_gather), static_cast<uint8_t>(t), 0, 0, -1, op_seq_++, 0, count};
  const size_t es = elem_size(t);
  const auto* src = static_cast<const std::byte*>(in);
  auto* dst = static_cast<std::byte*>(out);
  if (n_ == 1) {
    copy_bytes(dst, src, count * es);
    return;
  }
  const bool stream = count * n_ * es >= opts_.stream_min_bytes;
  StreamFence fence{stream};
  const size_t per_piece = slot_bytes_ / es;
  const size_t K = pieces_for(count, per_piece);
  for (size_t k = 0; k < K; ++k) {
    const size_t off = k * per_piece;
    const size_t len = std::min(per_piece, count - std::min(count, off));
    const uint32_t g = piece_;
    const int set = g & 1;
    begin_piece(d, true);
    copy_bytes(slot(set, rank_), src + off * es, len * es);
    publish(2 * g + 1);
    copy_out(dst + (rank_ * count + off) * es, src + off * es, len * es, stream);
    for (int p = 0; p < n_; ++p) {
      if (p == rank_) continue;
      wait_peer(p, 2 * g + 1, d, k == 0);
      copy_out(dst + (p * count + off) * es, slot(set, p), len * es, stream);
    }
    ++piece_;
  }
}

CpuGroup::Uneven CpuGroup::uneven(const char* what, std::span<const size_t> counts, ElemType t, int root) const {
  check_bound(what);
  check_root(root, what);
  if (counts.size() != static_cast<size_t>(n_))
    throw ArgumentError(std::string("CpuGroup::") + what + ": " + std::to_string(counts.size()) + " counts for " +
                        std::to_string(n_) + " ranks");
  Uneven u;
  u.total = std::accumulate(counts.begin(), counts.end(), size_t(0));
  u.displ.assign(static_cast<size_t>(n_), 0);
  for (int p = 1; p < n_; ++p) u.displ[p] = u.displ[p - 1] + counts[p - 1];
  u.per_piece = slot_bytes_ / elem_size(t);
  u.K = pieces_for(*std::max_element(counts.begin(), counts.end()), u.per_piece);
  return u;
}

void CpuGroup::gather(const void* in, void* out, size_t count, ElemType t, int root) {
  check_root(root, "gather");
  std::vector<size_t> counts(n_, count);
  gatherv(in, out, counts, t, root);
}

void CpuGroup::gatherv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root) {
  const Uneven u = uneven("gather", counts, t, root);
  const size_t total = u.total, per_piece = u.per_piece, K = u.K;
  const std::vector<size_t>& displ = u.displ;
  const Desc d{static_cast<uint8_t>(Coll::gather), static_cast<uint8_t>(t), 0, 0, root, op_seq_++, 0, total};
  const size_t es = elem_size(t);
  const auto* src = static_cast<const std::byte*>(in);
  auto* dst = static_cast<std::byte*>(out);
  if (n_ == 1) {
    copy_bytes(dst, src, counts[0] * es);
    return;
  }
  auto piece_len = [&](int p, size_t off) { return u.piece_len(counts, p, off); };
  const bool stream = total * es >= opts_.stream_min_bytes;
  StreamFence fence{stream};
  for (size_t k = 0; k < K; ++k) {
    const size_t off = k * per_piece;
    const uint32_t g = piece_;
    const int set = g & 1;
    begin_piece(d, true);
    if (rank_ != root) {
      copy_bytes(slot(set, rank_), src + off * es, piece_len(rank_, off) * es);
      publish(2 * g + 1);
    } else {
      publish(2 * g + 1);
      copy_out(dst + (displ[root] + off) * es, src + off * es, piece_len(root, off) * es, stream);
      for (int p = 0; p < n_; ++p) {
        if (p == root) continue;
        const size_t len = piece_len(p, off);
        if (len == 0 && k != 0) continue;  // nothing left from p (flow control still covers it)
        wait_peer(p, 2 * g + 1, d, k == 0);
        copy_out(dst + (displ[p] + off) * es, slot(set, p), len * es, stream);
      }
    }
    ++piece_;
  }
}

void CpuGroup::scatter(const void* in, void* out, size_t count, ElemType t, int root) {
  check_root(root, "scatter");
  std::vector<size_t> counts(n_, count);
  scatterv(in, out, counts, t, root);
}

void CpuGroup::scatterv(const void* in, void* out, std::span<const size_t> counts, ElemType t, int root) {
  const Uneven u = uneven("scatter", counts, t, root);
  const size_t total = u.total, per_piece = u.per_piece, K = u.K;
  const std::vector<size_t>& displ = u.displ;
  const Desc d{static_cast<uint8_t>(Coll::scatter), static_cast<uint8_t>(t), 0, 0, root, op_seq_++, 0, total};
  const size_t es = elem_size(t);
  const auto* src = static_cast<const std::byte*>(in);
  auto* dst = static_cast<std::byte*>(out);
  if (n_ == 1) {
    copy_bytes(dst, src, counts[0] * es);
    return;
  }
  auto piece_len = [&](int p, size_t off) { return u.piece_len(counts, p, off); };
  const bool stream = counts[rank_] * es >= opts_.stream_min_bytes;
  StreamFence fence{stream};
  for (size_t k = 0; k < K; ++k) {
    const size_t off = k * per_piece;
    const uint32_t g = piece_;
    const int set = g & 1;
    begin_piece(d, true);
    if (rank_ == root) {
      // The root fills every receiver's slot of this set (nobody else writes
      // in a scatter piece).
      for (int p = 0; p < n_; ++p)
        if (p != root) copy_bytes(slot(set, p), src + (displ[p] + off) * es, piece_len(p, off) * es);
      publish(2 * g + 1);
      copy_out(dst + off * es, src + (displ[root] + off) * es, piece_len(root, off) * es, stream);
    } else {
      publish(2 * g + 1);
      const size_t len = piece_len(rank_, off);
      if (len || k == 0) {
        wait_peer(root, 2 * g + 1, d, k == 0);
        copy_out(dst + off * es, slot(set, rank_), len * es, stream);
      }
    }
    ++piece_;
  }
}

std::vector<uint64_t> CpuGroup::all_gather_u64(uint64_t value) {
  check_bound("all_gather_u64");
  const Desc d{static_cast<uint8_t>(Coll::exchange), static_cast<uint8_t>(ElemType::i64), 0, 0, -1, op_seq_++, 0, 1};
  std::vector<uint64_t> out(n_);
  if (n_ == 1) {
    out[0] = value;
    return out;
  }
  const uint32_t g = piece_;
  begin_piece(d, true);
  ctl(rank_)->value[g & 1] = value;
  publish(2 * g + 1);
  wait_all(2 * g + 1, d, true);
  for (int p = 0; p < n_; ++p) out[p] = ctl(p)->value[g & 1];
  ++piece_;
  return out;
}

void CpuGroup::all_reduce_peers(void* const* bufs, size_t offset, size_t count, ElemType t, ReduceOp op) {
  check_bound("all_reduce_peers");
  const size_t esz = elem_size(t);
  if (n_ == 1) {
    // avg over one rank: x / 1, the same bits.
    return;
  }
  barrier();
  // This rank's slice, in whole 64-byte lines where the range allows, so
  // no two ranks write into one cache line of a buffer.
  const size_t line = std::max<size_t>(1, 64 / esz);
  const size_t lines = (count + line - 1) / line;
  const size_t per = lines / static_cast<size_t>(n_), rem = lines % static_cast<size_t>(n_);
  const size_t me = static_cast<size_t>(rank_);
  const size_t first = (me * per + std::min(me, rem)) * line;
  const size_t last = std::min(count, ((me + 1) * per + std::min(me + 1, rem)) * line);
  if (first < last) {
    const size_t at = (offset + first) * esz, len = last - first;
    std::vector<const void*> src(static_cast<size_t>(n_));
    for (int r = 0; r < n_; ++r) src[static_cast<size_t>(r)] = static_cast<const std::byte*>(bufs[r]) + at;
    void* mine = static_cast<std::byte*>(bufs[rank_]) + at;
    kernels::combine(mine, src.data(), n_, len, t, op);
    for (int r = 0; r < n_; ++r)
      if (r != rank_) std::memcpy(static_cast<std::byte*>(bufs[r]) + at, mine, len * esz);
  }
  barrier();
}

void CpuGroup::reduce_scatter_peers(void* const* bufs, size_t offset, size_t count, size_t slice, ElemType t,
                                    ReduceOp op) {
  check_bound("reduce_scatter_peers");
  if (n_ == 1) return;  // avg over one rank: x / 1, the same bits
  barrier();
  const size_t esz = elem_size(t);
  const size_t me = static_cast<size_t>(rank_);
  const size_t first = std::max(offset, me * slice), last = std::min(offset + count, (me + 1) * slice);
  if (first < last) {
    std::vector<const void*> src(static_cast<size_t>(n_));
    for (int r = 0; r < n_; ++r) src[static_cast<size_t>(r)] = static_cast<const std::byte*>(bufs[r]) + first * esz;
    kernels::combine(static_cast<std::byte*>(bufs[rank_]) + first * esz, src.data(), n_, last - first, t, op);
  }
  // Nobody writes its buffer again (the next step's gradients) before every
  // rank has read its slice of it.
  barrier();
}

void CpuGroup::barrier() {
  check_bound("barrier");
  const Desc d{static_cast<uint8_t>(Coll::barrier), 0, 0, 0, -1, op_seq_++, 0, 0};
  if (n_ == 1) return;
  const uint32_t g = piece_;
  begin_piece(d, true);
  publish(2 * g + 1);
  wait_all(2 * g + 1, d, true);
  ++piece_;
}

}  // namespace synk::comm
