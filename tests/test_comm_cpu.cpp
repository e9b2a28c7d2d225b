// tests/test_comm_cpu.cpp — shared-memory segments and CPU collectives over
// real forked processes.
//
// Every collective is checked with integer-valued data and exact equality,
// for 1-4 ranks, counts 0, 1, odd, not divisible by the rank count, and
// large, with a tiny staging slot (many pieces) and the default one. Child
// processes never run gtest asserts: they compute, compare and _exit(0/1);
// the parent checks its own result and every child's exit status, and always
// reaps (SIGKILL after a deadline), so no process is left behind. Fault tests
// cover a peer that never arrives, a peer SIGKILLed mid-collective, an abort
// from the master, and ranks calling different collectives.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "comm/cpu_group.hpp"
#include "comm/shm.hpp"
#include "synk/error.hpp"

using synk::comm::CpuGroup;
using synk::comm::CpuGroupOptions;
using synk::comm::ElemType;
using synk::ReduceOp;
using synk::comm::SharedSegment;
using namespace std::chrono_literals;

namespace {

// ---- running a body on N ranks ----------------------------------------------------------

struct RankRun {
  bool parent_ok = false;
  std::string parent_error;
  std::vector<int> status;  // waitpid status of ranks 1..N-1 (index = rank)
  std::vector<pid_t> pids;
};

std::string status_text(int st) {
  if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return std::string("signal ") + strsignal(WTERMSIG(st));
  return "status " + std::to_string(st);
}

// Forks ranks 1..N-1 (each binds its rank, runs body, exits 0 iff it returned
// true), runs rank 0 in this process, then reaps every child (killing any
// still alive after `reap_deadline`). `after_fork` runs in the parent once the
// children exist (e.g. to start a killer thread); `parent_body` replaces body
// for rank 0 when given.
RankRun run_ranks(CpuGroup& g, const std::function<bool(CpuGroup&, int)>& body,
                  const std::function<bool(CpuGroup&, const std::vector<pid_t>&)>& parent_body = {},
                  std::chrono::seconds reap_deadline = 60s) {
  RankRun run;
  const int n = g.size();
  run.pids.assign(n, 0);
  run.status.assign(n, 0);
  std::fflush(nullptr);
  for (int r = 1; r < n; ++r) {
    pid_t pid = ::fork();
    if (pid < 0) {
      run.parent_error = "fork failed";
      break;
    }
    if (pid == 0) {
      bool ok = false;
      try {
        g.bind(r);
        ok = body(g, r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
      }
      ::_exit(ok ? 0 : 1);
    }
    run.pids[r] = pid;
  }
  if (run.parent_error.empty()) {
    try {
      g.bind(0);
      run.parent_ok = parent_body ? parent_body(g, run.pids) : body(g, 0);
    } catch (const std::exception& e) {
      run.parent_error = e.what();
    }
  }
  if (!run.parent_ok) g.abort("rank 0 failed: " + run.parent_error);  // children stop waiting
  const auto deadline = std::chrono::steady_clock::now() + reap_deadline;
  for (int r = 1; r < n; ++r) {
    if (!run.pids[r]) continue;
    for (;;) {
      int st = 0;
      pid_t w = ::waitpid(run.pids[r], &st, WNOHANG);
      if (w == run.pids[r]) {
        run.status[r] = st;
        break;
      }
      if (w < 0) break;
      if (std::chrono::steady_clock::now() > deadline) ::kill(run.pids[r], SIGKILL);
      std::this_thread::sleep_for(1ms);
    }
  }
  return run;
}

void expect_all_ok(const RankRun& run) {
  EXPECT_TRUE(run.parent_ok) << "rank 0: " << run.parent_error;
  for (size_t r = 1; r < run.status.size(); ++r)
    EXPECT_TRUE(WIFEXITED(run.status[r]) && WEXITSTATUS(run.status[r]) == 0)
        << "rank " << r << ": " << status_text(run.status[r]);
}

// ---- data: exactly representable, known to every rank ----------------------------------------

template <class T> T gen(int rank, size_t i, ReduceOp op) {
  if (op == ReduceOp::prod) {
    static const double vals[] = {1, 2, -1, 0.5, 1, -2, 1, 1};
    double v = vals[(i * 3 + rank * 5) % 8];
    if constexpr (std::is_integral_v<T>) return static_cast<T>(v == 0.5 ? 3 : v);
    else return static_cast<T>(v);
  }
  return static_cast<T>(static_cast<long>((i * 7 + rank * 13 + (i >> 10)) % 201) - 100);
}

template <class T> T apply(T a, T b, ReduceOp op) {
  using W = std::conditional_t<std::is_integral_v<T>, std::make_unsigned_t<std::conditional_t<std::is_integral_v<T>, T, int>>, T>;
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return static_cast<T>(static_cast<W>(a) + static_cast<W>(b));
    case ReduceOp::prod: return static_cast<T>(static_cast<W>(a) * static_cast<W>(b));
    case ReduceOp::max: return a < b ? b : a;
    case ReduceOp::min: return b < a ? b : a;
  }
  return a;
}

template <class T> T expected_reduce(int n, size_t i, ReduceOp op) {
  T acc = gen<T>(0, i, op);
  for (int r = 1; r < n; ++r) acc = apply(acc, gen<T>(r, i, op), op);
  if (op == ReduceOp::avg) acc = static_cast<T>(acc / static_cast<T>(n));
  return acc;
}

template <class T> bool same(const std::vector<T>& got, const std::vector<T>& want, const char* what,
                             int rank, size_t count) {
  if (got == want) return true;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) {
      std::fprintf(stderr, "rank %d: %s count=%zu: element %zu is %g, expected %g\n", rank, what, count, i,
                   static_cast<double>(got[i]), static_cast<double>(want[i]));
      break;
    }
  return false;
}

constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min, ReduceOp::prod};

// ---- per-collective bodies (run on every rank; true = all results exact) ------------------

template <class T> bool check_all_reduce(CpuGroup& g, int rank, size_t count, bool every_op) {
  const int n = g.size();
  bool ok = true;
  for (ReduceOp op : kOps) {
    if (!every_op && op != ReduceOp::sum) continue;
    std::vector<T> in(count), out(count, T(77)), want(count);
    for (size_t i = 0; i < count; ++i) in[i] = gen<T>(rank, i, op), want[i] = expected_reduce<T>(n, i, op);
    g.all_reduce(in.data(), out.data(), count, synk::comm::elem_type_of<T>(), op);
    ok &= same(out, want, "all_reduce", rank, count);
    g.all_reduce(std::span<T>(in), op);  // in place
    ok &= same(in, want, "all_reduce in place", rank, count);
  }
  return ok;
}

template <class T> bool check_reduce(CpuGroup& g, int rank, size_t count, bool every_op) {
  const int n = g.size();
  bool ok = true;
  for (ReduceOp op : kOps) {
    if (!every_op && op != ReduceOp::sum) continue;
    for (int root = 0; root < n; ++root) {
      if (!every_op && root != n - 1) continue;
      std::vector<T> in(count), out(count, T(77)), want(count, T(77));
      for (size_t i = 0; i < count; ++i) {
        in[i] = gen<T>(rank, i, op);
        if (rank == root) want[i] = expected_reduce<T>(n, i, op);
      }
      g.reduce(in.data(), out.data(), count, synk::comm::elem_type_of<T>(), op, root);
      ok &= same(out, want, "reduce", rank, count);
    }
  }
  return ok;
}

template <class T> bool check_broadcast(CpuGroup& g, int rank, size_t count, bool every_root) {
  const int n = g.size();
  bool ok = true;
  for (int root = 0; root < n; ++root) {
    if (!every_root && root != n - 1) continue;
    std::vector<T> buf(count), want(count);
    for (size_t i = 0; i < count; ++i) {
      buf[i] = gen<T>(rank, i, ReduceOp::sum);
      want[i] = gen<T>(root, i, ReduceOp::sum);
    }
    g.broadcast(buf.data(), count, synk::comm::elem_type_of<T>(), root);
    ok &= same(buf, want, "broadcast", rank, count);
  }
  return ok;
}

template <class T> bool check_all_gather(CpuGroup& g, int rank, size_t count, bool) {
  const int n = g.size();
  std::vector<T> in(count), out(count * n, T(77)), want(count * n);
  for (size_t i = 0; i < count; ++i) in[i] = gen<T>(rank, i, ReduceOp::sum);
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < count; ++i) want[r * count + i] = gen<T>(r, i, ReduceOp::sum);
  g.all_gather(in.data(), out.data(), count, synk::comm::elem_type_of<T>());
  return same(out, want, "all_gather", rank, count);
}

// Uneven counts: rank 1 holds nothing, the others count + 7 * rank.
std::vector<size_t> uneven(int n, size_t count) {
  std::vector<size_t> c(n);
  for (int r = 0; r < n; ++r) c[r] = r == 1 ? 0 : count + 7 * r;
  return c;
}

template <class T> bool check_gather(CpuGroup& g, int rank, size_t count, bool every_root) {
  const int n = g.size();
  bool ok = true;
  for (int root = 0; root < n; ++root) {
    if (!every_root && root != n - 1) continue;
    // Equal counts.
    std::vector<T> in(count), out(rank == root ? count * n : 0), want(out.size());
    for (size_t i = 0; i < count; ++i) in[i] = gen<T>(rank, i, ReduceOp::sum);
    if (rank == root)
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < count; ++i) want[r * count + i] = gen<T>(r, i, ReduceOp::sum);
    g.gather(in.data(), out.data(), count, synk::comm::elem_type_of<T>(), root);
    ok &= same(out, want, "gather", rank, count);
    // Different counts known to all (gatherv) and unknown (gather_concat).
    const std::vector<size_t> counts = uneven(n, count);
    std::vector<T> mine(counts[rank]), wantv;
    for (size_t i = 0; i < mine.size(); ++i) mine[i] = gen<T>(rank, i, ReduceOp::sum);
    if (rank == root)
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < counts[r]; ++i) wantv.push_back(gen<T>(r, i, ReduceOp::sum));
    std::vector<T> outv(rank == root ? wantv.size() : 0);
    g.gatherv(mine.data(), outv.data(), counts, synk::comm::elem_type_of<T>(), root);
    ok &= same(outv, wantv, "gatherv", rank, count);
    std::vector<size_t> got_counts;
    std::vector<T> cat = g.gather_concat<T>(std::span<const T>(mine), root, &got_counts);
    ok &= same(cat, wantv, "gather_concat", rank, count);
    ok &= got_counts == counts;
  }
  return ok;
}

template <class T> bool check_scatter(CpuGroup& g, int rank, size_t count, bool every_root) {
  const int n = g.size();
  bool ok = true;
  for (int root = 0; root < n; ++root) {
    if (!every_root && root != n - 1) continue;
    std::vector<T> in(rank == root ? count * n : 0), out(count, T(77)), want(count);
    for (size_t i = 0; i < in.size(); ++i) in[i] = gen<T>(0, i, ReduceOp::sum);
    for (size_t i = 0; i < count; ++i) want[i] = gen<T>(0, rank * count + i, ReduceOp::sum);
    g.scatter(in.data(), out.data(), count, synk::comm::elem_type_of<T>(), root);
    ok &= same(out, want, "scatter", rank, count);
    const std::vector<size_t> counts = uneven(n, count);
    const size_t total = std::accumulate(counts.begin(), counts.end(), size_t(0));
    size_t displ = 0;
    for (int r = 0; r < rank; ++r) displ += counts[r];
    std::vector<T> inv(rank == root ? total : 0), outv(counts[rank], T(77)), wantv(counts[rank]);
    for (size_t i = 0; i < inv.size(); ++i) inv[i] = gen<T>(1, i, ReduceOp::sum);
    for (size_t i = 0; i < wantv.size(); ++i) wantv[i] = gen<T>(1, displ + i, ReduceOp::sum);
    g.scatterv(inv.data(), outv.data(), counts, synk::comm::elem_type_of<T>(), root);
    ok &= same(outv, wantv, "scatterv", rank, count);
  }
  return ok;
}

enum class Which { all_reduce, reduce, broadcast, all_gather, gather, scatter };

const char* which_name(Which w) {
  static const char* names[] = {"AllReduce", "Reduce", "Broadcast", "AllGather", "Gather", "Scatter"};
  return names[static_cast<int>(w)];
}

void PrintTo(Which w, std::ostream* os) { *os << which_name(w); }

template <class T> bool check_one(Which w, CpuGroup& g, int rank, size_t count, bool thorough) {
  switch (w) {
    case Which::all_reduce: return check_all_reduce<T>(g, rank, count, thorough);
    case Which::reduce: return check_reduce<T>(g, rank, count, thorough);
    case Which::broadcast: return check_broadcast<T>(g, rank, count, thorough);
    case Which::all_gather: return check_all_gather<T>(g, rank, count, thorough);
    case Which::gather: return check_gather<T>(g, rank, count, thorough);
    case Which::scatter: return check_scatter<T>(g, rank, count, thorough);
  }
  return false;
}

// Every dtype over counts 0, 1, odd, not divisible by 2/3/4, and one large
// count; small counts go through every op and root, the large one once.
bool check_collective(Which w, CpuGroup& g, int rank, size_t large) {
  bool ok = true;
  for (size_t count : {size_t(0), size_t(1), size_t(1001), size_t(4099)}) {
    ok &= check_one<int32_t>(w, g, rank, count, true);
    ok &= check_one<float>(w, g, rank, count, true);
    ok &= check_one<int64_t>(w, g, rank, count, true);
    ok &= check_one<double>(w, g, rank, count, true);
  }
  ok &= check_one<int32_t>(w, g, rank, large, false);
  ok &= check_one<float>(w, g, rank, large, false);
  return ok;
}

}  // namespace

// ---- shared memory segments --------------------------------------------------------------------

TEST(CommShm, SharedAcrossForkAndPrivate) {
  SharedSegment seg = SharedSegment::create(1 << 16, "synk-test");
  ASSERT_TRUE(seg.valid());
  ASSERT_EQ(seg.size(), size_t(1) << 16);
  auto* p = static_cast<int*>(seg.data());
  EXPECT_EQ(p[0], 0);  // zero-filled
  p[0] = 41;
  std::fflush(nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int v = p[0];
    p[1] = v + 1;
    ::_exit(v == 41 ? 0 : 1);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_EQ(p[1], 42);  // the child's write is visible

  // No name in any file system: the fd is a memfd, mode 0600, size sealed.
  char link[256] = {};
  std::string fdpath = "/proc/self/fd/" + std::to_string(seg.fd());
  ASSERT_GT(::readlink(fdpath.c_str(), link, sizeof link - 1), 0);
  EXPECT_EQ(std::string(link).rfind("/memfd:synk-test", 0), 0u) << link;
  struct stat sb {};
  ASSERT_EQ(::fstat(seg.fd(), &sb), 0);
  EXPECT_EQ(sb.st_mode & 0777, 0600u);
  EXPECT_NE(::ftruncate(seg.fd(), 1 << 10), 0);  // sealed: cannot shrink under a mapping
  EXPECT_TRUE(::fcntl(seg.fd(), F_GETFD) & FD_CLOEXEC);
}

TEST(CommShm, MoveOnlyAndReleases) {
  static_assert(!std::is_copy_constructible_v<SharedSegment>);
  static_assert(std::is_nothrow_move_constructible_v<SharedSegment>);
  SharedSegment a = SharedSegment::create(4096);
  const int fd = a.fd();
  SharedSegment b = std::move(a);
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.fd(), fd);
  b.reset();
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);  // closed
  EXPECT_EQ(errno, EBADF);

  SharedSegment empty = SharedSegment::create(0);
  EXPECT_TRUE(empty.valid());
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.size(), 0u);
}

// ---- collectives -------------------------------------------------------------------------------

class CommCpuCollective : public ::testing::TestWithParam<std::tuple<int, Which>> {};

TEST_P(CommCpuCollective, ExactOverCountsAndTypes) {
  const auto [ranks, which] = GetParam();
  // A 4 KiB slot splits even the small counts into many pieces (and writes
  // results of 16 KiB and more with non-temporal stores); the default slot
  // with a large count is the cached streaming path.
  for (size_t slot : {size_t(4096), size_t(256 * 1024)}) {
    CpuGroup g({.ranks = ranks, .slot_bytes = slot, .spin = 5us, .timeout = 20s,
                .stream_min_bytes = slot == 4096 ? 16384 : size_t(8) << 20});
    const size_t large = slot == 4096 ? 65537 : (size_t(1) << 20) + 3;
    RankRun run = run_ranks(g, [&](CpuGroup& gg, int rank) { return check_collective(which, gg, rank, large); });
    SCOPED_TRACE("slot_bytes=" + std::to_string(slot));
    expect_all_ok(run);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Ranks, CommCpuCollective,
    ::testing::Combine(::testing::Values(1, 2, 3, 4),
                       ::testing::Values(Which::all_reduce, Which::reduce, Which::broadcast,
                                         Which::all_gather, Which::gather, Which::scatter)),
    [](const ::testing::TestParamInfo<std::tuple<int, Which>>& info) {
      return std::string(which_name(std::get<1>(info.param))) + "_" + std::to_string(std::get<0>(info.param)) +
             "ranks";
    });

TEST(CommCpu, BarrierExchangeAndMixedSequence) {
  for (int ranks : {1, 2, 3, 4}) {
    CpuGroup g({.ranks = ranks, .slot_bytes = 4096, .spin = 5us, .timeout = 20s});
    RankRun run = run_ranks(g, [&](CpuGroup& gg, int rank) {
      bool ok = true;
      for (int it = 0; it < 50; ++it) {
        std::vector<uint64_t> v = gg.all_gather_u64(uint64_t(rank) * 1000 + it);
        for (int r = 0; r < ranks; ++r) ok &= v[r] == uint64_t(r) * 1000 + it;
        gg.barrier();
        // Back to back, different collectives, no barrier between them.
        int32_t x = rank + it, sum = 0;
        gg.all_reduce(&x, &sum, 1, ElemType::i32, ReduceOp::sum);
        ok &= sum == ranks * (ranks - 1) / 2 + ranks * it;
        int32_t b = rank == it % ranks ? it : -1;
        gg.broadcast(&b, 1, ElemType::i32, it % ranks);
        ok &= b == it;
      }
      return ok;
    });
    SCOPED_TRACE("ranks=" + std::to_string(ranks));
    expect_all_ok(run);
  }
}

// ---- argument checks and faults ----------------------------------------------------------------

TEST(CommCpu, RefusesBadArguments) {
  EXPECT_THROW(CpuGroup({.ranks = 0}), synk::ArgumentError);
  EXPECT_THROW(CpuGroup({.ranks = CpuGroup::kMaxRanks + 1}), synk::ArgumentError);
  CpuGroup g({.ranks = 2, .timeout = 1s});
  int32_t x = 0;
  EXPECT_THROW(g.all_reduce(&x, &x, 1, ElemType::i32, ReduceOp::sum), synk::ArgumentError);  // not bound
  EXPECT_THROW(g.bind(2), synk::ArgumentError);
  g.bind(0);
  EXPECT_THROW(g.broadcast(&x, 1, ElemType::i32, 2), synk::ArgumentError);
  EXPECT_THROW(g.reduce(&x, &x, 1, ElemType::i32, ReduceOp::sum, -1), synk::ArgumentError);
  std::vector<size_t> counts{1};
  EXPECT_THROW(g.gatherv(&x, &x, counts, ElemType::i32, 0), synk::ArgumentError);
  std::vector<int32_t> a(3), b(4);
  EXPECT_THROW(g.all_reduce<int32_t>(std::span<const int32_t>(a), std::span<int32_t>(b), ReduceOp::sum),
               synk::ArgumentError);
  EXPECT_FALSE(g.aborted());  // refusals touch no shared state
}

TEST(CommCpu, WaiterTimesOutNamingRankAndCollective) {
  CpuGroup g({.ranks = 2, .spin = 1us, .timeout = 300ms});
  std::string err;
  RankRun run = run_ranks(
      g, [](CpuGroup&, int) { return true; },  // rank 1 never arrives
      [&](CpuGroup& gg, const std::vector<pid_t>&) {
        std::vector<float> v(100, 1.f);
        try {
          gg.all_reduce<float>(std::span<float>(v), ReduceOp::sum);
        } catch (const synk::BackendError& e) {
          err = e.what();
        }
        return true;
      });
  expect_all_ok(run);
  EXPECT_NE(err.find("rank 0"), std::string::npos) << err;
  EXPECT_NE(err.find("all_reduce(count=100, f32, sum)"), std::string::npos) << err;
  EXPECT_NE(err.find("timed out after 300 ms waiting for rank 1"), std::string::npos) << err;
  // The group is now aborted: later calls fail at once, quoting the reason.
  EXPECT_TRUE(g.aborted());
  int32_t x = 0;
  try {
    g.barrier();
    ADD_FAILURE() << "barrier after abort did not throw";
  } catch (const synk::BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("aborted"), std::string::npos) << e.what();
  }
  (void)x;
}

TEST(CommCpu, PeerKilledMidCollectiveEndsOthersWaits) {
  CpuGroup g({.ranks = 3, .slot_bytes = 4096, .spin = 5us, .timeout = 500ms});
  std::string err;
  auto loop = [](CpuGroup& gg, int) {
    std::vector<int32_t> v(1 << 16, 1);
    try {
      for (int it = 0; it < 100000; ++it) gg.all_reduce<int32_t>(std::span<int32_t>(v), ReduceOp::max);
    } catch (const synk::BackendError&) {
      return true;  // the expected end
    }
    return false;
  };
  RankRun run = run_ranks(g, loop, [&](CpuGroup& gg, const std::vector<pid_t>& pids) {
    std::thread killer([victim = pids[2]] {
      std::this_thread::sleep_for(50ms);
      ::kill(victim, SIGKILL);
    });
    std::vector<int32_t> v(1 << 16, 1);
    bool threw = false;
    try {
      for (int it = 0; it < 100000; ++it) gg.all_reduce<int32_t>(std::span<int32_t>(v), ReduceOp::max);
    } catch (const synk::BackendError& e) {
      threw = true;
      err = e.what();
    }
    killer.join();
    return threw;
  });
  EXPECT_TRUE(run.parent_ok) << run.parent_error;
  EXPECT_TRUE(WIFEXITED(run.status[1]) && WEXITSTATUS(run.status[1]) == 0) << status_text(run.status[1]);
  EXPECT_TRUE(WIFSIGNALED(run.status[2]) && WTERMSIG(run.status[2]) == SIGKILL) << status_text(run.status[2]);
  EXPECT_NE(err.find("all_reduce"), std::string::npos) << err;
}

TEST(CommCpu, AbortFromMasterWakesSleepingWorker) {
  // A 30 s timeout: only the abort can end the worker's wait promptly.
  CpuGroup g({.ranks = 2, .spin = 1us, .timeout = 30s});
  RankRun run = run_ranks(
      g,
      [](CpuGroup& gg, int) {
        int32_t x = 1;
        try {
          gg.all_reduce(&x, &x, 1, ElemType::i32, ReduceOp::sum);
        } catch (const synk::BackendError& e) {
          return std::string(e.what()).find("worker 7 died") != std::string::npos;
        }
        return false;
      },
      [](CpuGroup& gg, const std::vector<pid_t>&) {
        std::this_thread::sleep_for(100ms);  // let rank 1 fall asleep on the futex
        gg.abort("worker 7 died");
        return gg.abort_reason() == "worker 7 died";
      });
  expect_all_ok(run);
}

TEST(CommCpu, MismatchedCollectivesAreReported) {
  CpuGroup g({.ranks = 2, .spin = 1us, .timeout = 10s});
  std::string err;
  RankRun run = run_ranks(
      g,
      [](CpuGroup& gg, int) {
        int32_t x[10] = {};
        try {
          gg.broadcast(x, 10, ElemType::i32, 0);
        } catch (const synk::BackendError& e) {
          return std::string(e.what()).find("mismatched") != std::string::npos ||
                 std::string(e.what()).find("aborted") != std::string::npos;
        }
        return false;
      },
      [&](CpuGroup& gg, const std::vector<pid_t>&) {
        int32_t x[10] = {};
        try {
          gg.all_reduce(x, x, 10, ElemType::i32, ReduceOp::sum);
        } catch (const synk::BackendError& e) {
          err = e.what();
          return true;
        }
        return false;
      });
  expect_all_ok(run);
  EXPECT_TRUE(err.find("mismatched collective: rank 1 called broadcast(count=10, i32, root=0)") !=
                  std::string::npos ||
              err.find("aborted") != std::string::npos)
      << err;
}
