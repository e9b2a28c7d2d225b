// Plain jobs (synk/jobs.hpp): job context and per-rank storage, critical and
// ordered sections, reduce as results arrive (and in job order), futures,
// shared arrays written by jobs, results of any size through the Codec
// point, the parallel argsort / sort, cpu_count and the default rank count.
// Exact results only; nothing here is timed.
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

using namespace synk;
using synk_test::opts;

namespace {

// ---- the serialisation point, at compile time ---------------------------------------------

struct Point {
  std::string name;
  std::vector<double> xs;
};
}  // namespace

template <> struct synk::Codec<Point> {
  static void write(ByteWriter& w, const Point& p) {
    encode_value(w, p.name);
    encode_value(w, p.xs);
  }
  static Point read(ByteReader& r) {
    Point p;
    p.name = decode_value<std::string>(r);
    p.xs = decode_value<std::vector<double>>(r);
    return p;
  }
};

static_assert(Serialisable<int> && Serialisable<std::pair<int, float>>);
static_assert(Serialisable<std::string> && Serialisable<std::vector<std::string>> && Serialisable<Point>);
static_assert(Serialisable<std::tuple<int, std::string>> && Serialisable<std::optional<std::vector<int>>>);
static_assert(!Serialisable<int*>, "pointers do not travel between processes");
static_assert(!Serialisable<std::map<int, int>>, "no Codec for std::map: refused at compile time");
static_assert(!Serialisable<std::vector<int*>>);

namespace {

// ---- job functions (plain functions and captureless lambdas) ---------------------------------

int64_t sq(const int64_t& x) { return x * x; }

struct Seen {
  int32_t rank;
  int32_t count;  // this rank's per-rank counter after the job
  uint64_t job;
};

Seen count_on_rank(JobContext& ctx, const int32_t&) {
  std::this_thread::sleep_for(std::chrono::microseconds(300));  // so every rank takes some
  int& n = ctx.local<int>();
  ++n;
  return {ctx.rank(), n, ctx.job()};
}

// A read-modify-write of a shared counter that is slow enough to race.
void bump(JobContext& ctx, const DataRef& counter, int times) {
  for (int k = 0; k < times; ++k) {
    volatile int32_t* c = ctx.rows<int32_t>(counter).data();
    const int32_t v = *c;
    for (int spin = 0; spin < 2000; ++spin) asm volatile("" ::: "memory");
    if (k % 4 == 0) sched_yield();
    *c = v + 1;
  }
}
int unprotected(JobContext& ctx, const DataRef& counter) {
  bump(ctx, counter, 20);
  return 0;
}
int protected_(JobContext& ctx, const DataRef& counter) {
  for (int k = 0; k < 20; ++k) ctx.critical([&] { bump(ctx, counter, 1); });
  return 0;
}

// Appends the job index to a shared log [1 + n]: log[0] is the length.
struct LogJob {
  DataRef log;
  int32_t delay_us;
};
int log_in_order(JobContext& ctx, const LogJob& j) {
  std::this_thread::sleep_for(std::chrono::microseconds(j.delay_us));  // finish out of order
  ctx.ordered([&] {
    std::span<int32_t> l = ctx.rows<int32_t>(j.log);
    l[1 + static_cast<size_t>(l[0])] = static_cast<int32_t>(ctx.job());
    l[0] += 1;
  });
  return static_cast<int>(ctx.job());
}
// Only the even jobs have an ordered section: the odd ones must not block it.
int log_even(JobContext& ctx, const LogJob& j) {
  std::this_thread::sleep_for(std::chrono::microseconds(j.delay_us));
  if (ctx.job() % 2 == 0) ctx.ordered([&] {
      std::span<int32_t> l = ctx.rows<int32_t>(j.log);
      l[1 + static_cast<size_t>(l[0])] = static_cast<int32_t>(ctx.job());
      l[0] += 1;
    });
  return 0;
}
int ordered_twice(JobContext& ctx, const int32_t&) {
  ctx.ordered([] {});
  ctx.ordered([] {});
  return 0;
}

pid_t g_master = 0;
// Made by a worker that exits in a job (fail_some(3)).
std::string worker_exit_marker() { return "/tmp/synk-jobs-" + std::to_string(g_master) + ".worker-exited"; }
int32_t fail_some(const int32_t& x) {
  if (x == 1 && ::getpid() != g_master) throw std::runtime_error("job refused in a worker");
  if (x == 2) throw std::runtime_error("job refused everywhere");
  if (x == 3 && ::getpid() != g_master) {
    const int fd = ::open(worker_exit_marker().c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
    ::_exit(3);
  }
  if (x == 3) {
    // The master's job waits (10 s at most) until a worker has taken one
    // and exited: however late the worker starts, the master cannot run
    // every job itself first (which once made the test see no death).
    struct stat st{};
    for (int i = 0; i < 10000 && ::stat(worker_exit_marker().c_str(), &st) != 0; ++i) ::usleep(1000);
  }
  return x + 100;
}

std::string describe(const Point& p) {
  double s = 0;
  for (double x : p.xs) s += x;
  return p.name + ":" + std::to_string(static_cast<int>(s));
}

std::vector<int32_t> big_result(const int32_t& n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), n);
  return v;
}

struct RowJob {
  DataRef out;
  int64_t row;
};
void write_row(JobContext& ctx, const RowJob& j) {
  std::span<float> r = ctx.rows<float>(j.out, j.row, 1);
  for (size_t k = 0; k < r.size(); ++k) r[k] = static_cast<float>(j.row * 10 + static_cast<int64_t>(k));
}

int sleepy(const int32_t& ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

}  // namespace

// ---- 1. context and per-rank state ------------------------------------------------------------

TEST(Jobs, MapGivesResultsInJobOrderForAnyRankCount) {
  for (int n : {1, 2, 3}) {
    Runtime rt = synk::fork(opts(n));
    std::vector<int64_t> jobs(101);
    std::iota(jobs.begin(), jobs.end(), -50);
    std::vector<int64_t> out = rt.map(&sq, jobs);
    ASSERT_EQ(out.size(), jobs.size());
    for (size_t i = 0; i < jobs.size(); ++i) EXPECT_EQ(out[i], jobs[i] * jobs[i]);
    // A captureless lambda, and a void job.
    auto doubled = rt.map([](const int64_t& x) { return 2 * x; }, jobs);
    EXPECT_EQ(doubled[7], 2 * jobs[7]);
    rt.map([](const int64_t&) {}, jobs);
    EXPECT_TRUE(rt.map(&sq, std::vector<int64_t>{}).empty());
  }
}

TEST(Jobs, ContextNamesRankAndJobAndLocalStorageLivesAcrossJobsAndMaps) {
  Runtime rt = synk::fork(opts(3));
  std::vector<int32_t> jobs(60, 0);
  std::map<int, std::vector<int>> counts;  // by rank, in job order
  for (int round = 0; round < 2; ++round) {
    std::vector<Seen> seen = rt.map(&count_on_rank, jobs);
    for (size_t i = 0; i < seen.size(); ++i) {
      EXPECT_EQ(seen[i].job, i);
      ASSERT_GE(seen[i].rank, 0);
      ASSERT_LT(seen[i].rank, 3);
      counts[seen[i].rank].push_back(seen[i].count);
    }
  }
  // On every rank the counter went 1, 2, 3, ... over both maps: one object
  // per rank, kept from job to job and from map to map.
  int total = 0;
  for (auto& [rank, c] : counts) {
    std::vector<int> want(c.size());
    std::iota(want.begin(), want.end(), 1);
    EXPECT_EQ(c, want) << "rank " << rank;
    total += static_cast<int>(c.size());
  }
  EXPECT_EQ(total, 120);
  // A new runtime starts with fresh per-rank storage (the master's too).
  rt.close();
  Runtime again = synk::fork(opts(1));
  EXPECT_EQ(again.map(&count_on_rank, std::vector<int32_t>(1, 0))[0].count, 1);
}

// ---- 2. critical and ordered ------------------------------------------------------------------

TEST(Jobs, UnprotectedIncrementsRaceAndCriticalOnesDoNot) {
  Runtime rt = synk::fork(opts(2));
  Data counter = rt.zeros(i32, {1});
  std::vector<DataRef> jobs(40, counter.ref());
  const int32_t want = 40 * 20;
  bool lost = false;
  for (int attempt = 0; attempt < 10 && !lost; ++attempt) {
    counter.set(Array::from(std::vector<int32_t>{0}, {1}).view());
    jobs.assign(40, counter.ref());
    rt.map(&unprotected, jobs);
    const int32_t got = static_cast<const int32_t*>(counter.raw())[0];
    EXPECT_LE(got, want);
    lost = got < want;
  }
  EXPECT_TRUE(lost) << "two ranks never lost an unprotected increment in 10 maps";
  for (int attempt = 0; attempt < 3; ++attempt) {
    counter.set(Array::from(std::vector<int32_t>{0}, {1}).view());
    jobs.assign(40, counter.ref());
    rt.map(&protected_, jobs);
    EXPECT_EQ(static_cast<const int32_t*>(counter.raw())[0], want) << "critical lost an increment";
  }
}

TEST(Jobs, OrderedSectionsRunInJobOrder) {
  for (int n : {1, 2, 3}) {
    Runtime rt = synk::fork(opts(n));
    const int jobs_n = 50;
    Data log = rt.zeros(i32, {1 + jobs_n});
    std::vector<LogJob> jobs;
    for (int i = 0; i < jobs_n; ++i) jobs.push_back({log.ref(), (i * 37) % 7 * 300});
    rt.map(&log_in_order, jobs);
    const int32_t* l = static_cast<const int32_t*>(log.raw());
    ASSERT_EQ(l[0], jobs_n);
    for (int i = 0; i < jobs_n; ++i) EXPECT_EQ(l[1 + i], i);
    // Jobs without an ordered section do not hold the others back.
    Data log2 = rt.zeros(i32, {1 + jobs_n});
    for (auto& j : jobs) j.log = log2.ref();
    rt.map(&log_even, jobs);
    const int32_t* l2 = static_cast<const int32_t*>(log2.raw());
    ASSERT_EQ(l2[0], jobs_n / 2);
    for (int i = 0; i < jobs_n / 2; ++i) EXPECT_EQ(l2[1 + i], 2 * i);
    // At most once per job.
    try {
      rt.map(&ordered_twice, std::vector<int32_t>(3, 0));
      ADD_FAILURE() << "a second ordered section was accepted";
    } catch (const WorkerError& e) {
      EXPECT_NE(std::string(e.what()).find("twice"), std::string::npos) << e.what();
    }
    EXPECT_EQ(rt.map(&sq, std::vector<int64_t>{3})[0], 9) << "usable after";
  }
}

// ---- 3. reduce as results arrive ---------------------------------------------------------------

TEST(Jobs, MapReduceFoldsEveryResultOnceAndOrderedFoldsInJobOrder) {
  for (int n : {1, 2, 3}) {
    Runtime rt = synk::fork(opts(n));
    std::vector<int32_t> jobs(40);
    for (int i = 0; i < 40; ++i) jobs[static_cast<size_t>(i)] = (i * 13) % 5;  // ms of sleep
    // Completion order: every result exactly once, in some order.
    std::vector<int> order = rt.map_reduce(
        [](JobContext& ctx, const int32_t& ms) {
          std::this_thread::sleep_for(std::chrono::milliseconds(ms));
          return static_cast<int>(ctx.job());
        },
        jobs, std::vector<int>{}, [](std::vector<int> acc, int j) {
          acc.push_back(j);
          return acc;
        });
    std::vector<int> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int> all(40);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(sorted, all);
    // Job order, with a fold that is not commutative.
    std::string s = rt.map_reduce_ordered([](const int32_t& ms) { return std::to_string(ms); }, jobs, std::string(),
                                          [](std::string acc, const std::string& r) { return acc + r; });
    std::string want;
    for (int32_t ms : jobs) want += std::to_string(ms);
    EXPECT_EQ(s, want);
    EXPECT_EQ(rt.map_reduce(&sq, std::vector<int64_t>{1, 2, 3}, int64_t{0},
                            [](int64_t a, int64_t b) { return a + b; }),
              14);
  }
}

TEST(Jobs, AFoldThatThrowsStopsTheMapAndTheRuntimeStaysUsable) {
  Runtime rt = synk::fork(opts(2));
  std::vector<int64_t> jobs(200, 1);
  EXPECT_THROW(rt.map_reduce(&sq, jobs, 0,
                             [](int acc, int64_t) -> int {
                               if (acc == 5) throw std::logic_error("enough");
                               return acc + 1;
                             }),
               std::logic_error);
  EXPECT_EQ(rt.map(&sq, std::vector<int64_t>{4})[0], 16);
}

// ---- errors ----------------------------------------------------------------------------------------

TEST(Jobs, AJobsExceptionIsAWorkerErrorForTheLowestFailedJob) {
  g_master = ::getpid();
  Runtime rt = synk::fork(opts(2));
  std::vector<int32_t> jobs(30, 0);
  jobs[7] = 2;
  jobs[20] = 2;
  try {
    rt.map(&fail_some, jobs);
    FAIL() << "no error";
  } catch (const WorkerError& e) {
    EXPECT_NE(std::string(e.what()).find("job 7 failed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("refused everywhere"), std::string::npos) << e.what();
  }
  jobs[7] = jobs[20] = 0;
  EXPECT_EQ(rt.map(&fail_some, jobs)[29], 100);
  // A job that calls the runtime is refused.
  EXPECT_THROW(rt.map(
                   [](const int32_t&) {
                     Runtime none;
                     none.map(&sq, std::vector<int64_t>{1});
                     return 0;
                   },
                   std::vector<int32_t>{0}),
               WorkerError);
}

// ---- 4. asynchronous submission ------------------------------------------------------------------

TEST(Jobs, ApplyAsyncReturnsFuturesTheMasterIsFreeMeanwhile) {
  for (int n : {1, 2, 3}) {
    Runtime rt = synk::fork(opts(n));
    std::vector<Future<int64_t>> fs;
    for (int64_t i = 0; i < 500; ++i) fs.push_back(rt.apply_async(&sq, i));
    // The master works on its own while the workers run the jobs.
    int64_t mine = 0;
    for (int64_t i = 0; i < 1000; ++i) mine += i;
    EXPECT_EQ(mine, 499500);
    for (int64_t i = 499; i >= 0; --i) EXPECT_EQ(fs[static_cast<size_t>(i)].get(), i * i);
    EXPECT_EQ(fs[3].get(), 9) << "get() again";
    EXPECT_TRUE(fs[3].ready());
    // Different functions and types in one stream; map_async.
    Future<std::string> s = rt.apply_async([](const int32_t& x) { return std::string(static_cast<size_t>(x), 'z'); }, 3);
    auto many = rt.map_async(&sq, std::vector<int64_t>{5, 6});
    EXPECT_EQ(s.get(), "zzz");
    EXPECT_EQ(many[1].get(), 36);
    // Another runtime call finishes the queued jobs first; futures stay readable.
    Future<int64_t> before = rt.apply_async(&sq, int64_t{12});
    EXPECT_EQ(rt.map(&sq, std::vector<int64_t>{2})[0], 4);
    EXPECT_TRUE(before.ready());
    EXPECT_EQ(before.get(), 144);
    rt.join();
  }
}

TEST(Jobs, AFutureOfAFailedJobThrowsWorkerErrorTheOthersDoNot) {
  g_master = ::getpid();
  Runtime rt = synk::fork(opts(2));
  auto f = rt.map_async(&fail_some, std::vector<int32_t>{0, 2, 0});
  EXPECT_EQ(f[0].get(), 100);
  try {
    f[1].get();
    FAIL() << "no error";
  } catch (const WorkerError& e) {
    EXPECT_NE(std::string(e.what()).find("refused everywhere"), std::string::npos) << e.what();
  }
  EXPECT_EQ(f[2].get(), 100);
  rt.join();
  EXPECT_THROW(f[1].get(), WorkerError) << "also after the stream was finished";
  EXPECT_EQ(f[2].get(), 100);
}

TEST(Jobs, AWorkerThatDiesInAnAsyncJobFailsGet) {
  g_master = ::getpid();
  std::remove(worker_exit_marker().c_str());
  Runtime rt = synk::fork(opts(2));
  std::vector<Future<int32_t>> fs;
  for (int i = 0; i < 50; ++i) fs.push_back(rt.apply_async(&fail_some, int32_t{3}));  // kills the worker taking it
  bool died = false;
  for (auto& f : fs) {
    try {
      EXPECT_EQ(f.get(), 103);
    } catch (const WorkerError& e) {
      died = true;
      EXPECT_EQ(e.rank(), 1);
      EXPECT_NE(std::string(e.what()).find("exited with code 3"), std::string::npos) << e.what();
      break;
    }
  }
  EXPECT_TRUE(died);
  std::remove(worker_exit_marker().c_str());
}

TEST(Jobs, CloseCancelsQueuedJobs) {
  Runtime rt = synk::fork(opts(2));
  std::vector<Future<int>> fs;
  for (int i = 0; i < 40; ++i) fs.push_back(rt.apply_async(&sleepy, int32_t{20}));
  rt.close();
  int cancelled = 0;
  for (auto& f : fs) {
    try {
      EXPECT_EQ(f.get(), 20);
    } catch (const ArgumentError& e) {
      ++cancelled;
      EXPECT_NE(std::string(e.what()).find("never ran"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(cancelled, 0);
}

// ---- 5. shared arrays and any-size results ---------------------------------------------------------

TEST(Jobs, JobsWriteRowsOfASharedArray) {
  for (int n : {1, 2, 3}) {
    Runtime rt = synk::fork(opts(n));
    Data out = rt.zeros(f32, {33, 4});
    std::vector<RowJob> jobs;
    for (int64_t r = 0; r < 33; ++r) jobs.push_back({out.ref(), r});
    rt.map(&write_row, jobs);
    const float* p = static_cast<const float*>(out.raw());
    for (int64_t r = 0; r < 33; ++r)
      for (int64_t k = 0; k < 4; ++k) EXPECT_EQ(p[r * 4 + k], static_cast<float>(r * 10 + k));
    // Wrong dtype and rows out of range are the job's errors.
    EXPECT_THROW(rt.map([](JobContext& ctx, const DataRef& d) { return ctx.rows<int32_t>(d)[0]; },
                        std::vector<DataRef>{out.ref()}),
                 WorkerError);
    EXPECT_THROW(rt.map([](JobContext& ctx, const DataRef& d) { return ctx.rows<float>(d, 30, 5)[0]; },
                        std::vector<DataRef>{out.ref()}),
                 WorkerError);
  }
}

TEST(Jobs, StringsVectorsAndUserTypesTravelThroughCodec) {
  for (int n : {1, 2}) {
    Runtime rt = synk::fork(opts(n));
    std::vector<Point> pts;
    for (int i = 0; i < 25; ++i) pts.push_back({"p" + std::to_string(i), std::vector<double>(static_cast<size_t>(i), 1.0)});
    std::vector<std::string> got = rt.map(&describe, pts);
    for (int i = 0; i < 25; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], "p" + std::to_string(i) + ":" + std::to_string(i));
    // Results far larger than a slot (and than the old 64-byte results).
    std::vector<int32_t> sizes = {0, 1, 100, 100000, 3, 250000};
    std::vector<std::vector<int32_t>> big = rt.map(&big_result, sizes);
    for (size_t i = 0; i < sizes.size(); ++i) {
      ASSERT_EQ(big[i].size(), static_cast<size_t>(sizes[i]));
      if (sizes[i]) {
        EXPECT_EQ(big[i].front(), sizes[i]);
        EXPECT_EQ(big[i].back(), 2 * sizes[i] - 1);
      }
    }
    auto f = rt.apply_async(&big_result, int32_t{50000});
    EXPECT_EQ(f.get()[49999], 99999);
  }
}

// ---- 6. argsort / sort, cpu_count, default ranks ---------------------------------------------------

namespace {
bool nan_last_less(float a, float b) { return a < b || (!std::isnan(a) && std::isnan(b)); }

std::vector<int64_t> reference_argsort(const std::vector<float>& x, int64_t cols, int64_t col) {
  std::vector<int64_t> idx(x.size() / static_cast<size_t>(cols));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return nan_last_less(x[a * cols + col], x[b * cols + col]); });
  return idx;
}
}  // namespace

TEST(Jobs, ArgsortEqualsStdStableSortForEveryRankCountAndSize) {
  std::mt19937 gen(5);
  for (int n : {1, 2, 3}) {
    Runtime rt = synk::fork(opts(n));
    for (int64_t rows : {0, 1, 2, 7, 1023, 1024, 1025, 5000, 20011}) {
      std::vector<float> x(static_cast<size_t>(rows));
      std::uniform_int_distribution<int> small(-20, 20);  // many ties: stability shows
      for (float& v : x) v = static_cast<float>(small(gen)) * 0.5f;
      if (rows > 10) {
        x[3] = std::numeric_limits<float>::quiet_NaN();
        x[5] = -0.0f;
        x[6] = 0.0f;
        x[8] = -std::numeric_limits<float>::infinity();
      }
      Data d = rt.data(Array::from(x, {rows}).view());
      EXPECT_EQ(rt.argsort(d), reference_argsort(x, 1, 0)) << n << " ranks, " << rows << " rows";
      Array s = rt.sort(d);
      ASSERT_EQ(s.numel(), rows);
      const std::vector<int64_t> ref = reference_argsort(x, 1, 0);
      for (int64_t i = 0; i < rows; ++i) {
        const float a = s.data<float>()[i], b = x[static_cast<size_t>(ref[static_cast<size_t>(i)])];
        EXPECT_TRUE(std::memcmp(&a, &b, 4) == 0) << i;
      }
    }
    // A column of a 2-D Data, and i32.
    std::vector<float> m(3 * 2000);
    for (float& v : m) v = static_cast<float>(gen() % 100);
    Data md = rt.data(Array::from(m, {2000, 3}).view());
    EXPECT_EQ(rt.argsort(md, 2), reference_argsort(m, 3, 2));
    std::vector<int32_t> iv(3001);
    for (int32_t& v : iv) v = static_cast<int32_t>(gen() % 50) - 25;
    Data id = rt.data(Array::from(iv, {3001}).view());
    std::vector<int64_t> want(iv.size());
    std::iota(want.begin(), want.end(), 0);
    std::stable_sort(want.begin(), want.end(), [&](int64_t a, int64_t b) { return iv[a] < iv[b]; });
    EXPECT_EQ(rt.argsort(id), want);
    EXPECT_THROW(rt.argsort(md, 3), ArgumentError);
    EXPECT_THROW(rt.argsort(Data()), ArgumentError);
  }
}

TEST(Jobs, CpuCountIsTheUsableCpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  EXPECT_GE(synk::cpu_count(), 1);
  EXPECT_LE(synk::cpu_count(), CPU_COUNT(&set));
}

namespace {
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  explicit EnvGuard(const char* n) : name(n) {
    if (const char* v = ::getenv(n)) old = v;
  }
  void set(const char* v) { ::setenv(name.c_str(), v, 1); }
  void unset() { ::unsetenv(name.c_str()); }
  ~EnvGuard() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};
int ranks_of_default() {
  Runtime rt = synk::fork({.spin = std::chrono::microseconds(5)});
  return rt.size();
}
}  // namespace

TEST(Jobs, DefaultRankCountFromSynkWorkersThenOmpNumThreadsThenCpuCount) {
  EnvGuard sw("SYNK_WORKERS"), omp("OMP_NUM_THREADS");
  sw.unset();
  omp.unset();
  EXPECT_EQ(ranks_of_default(), std::min(synk::cpu_count(), 256));
  omp.set("3");
  EXPECT_EQ(ranks_of_default(), 3);
  omp.set("2,1");
  EXPECT_EQ(ranks_of_default(), 2) << "an OpenMP list: its first level";
  sw.set("4");
  EXPECT_EQ(ranks_of_default(), 4) << "SYNK_WORKERS wins";
  for (const char* bad : {"0", "-1", "two", "3x", "100000"}) {
    sw.set(bad);
    EXPECT_THROW(ranks_of_default(), ArgumentError) << bad;
  }
  sw.unset();
  omp.set("junk");
  EXPECT_THROW(ranks_of_default(), ArgumentError);
  omp.unset();
  sw.set("junk");
  Runtime explicit_count = synk::fork(opts(2));
  EXPECT_EQ(explicit_count.size(), 2) << "an explicit count ignores the environment";
}
