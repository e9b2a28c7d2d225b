// tests/cuda_emu/test_emu_nccl.cpp — self-tests of the emulated NCCL
// (nccl.cpp), the binary synk_cuda_emu_nccl_tests (label emu).
//
// Ranks are forked children (the parent never touches CUDA, as on a real
// GPU); each makes its communicator from an id made before fork, checks
// with integer data and exact equality, and reports through its exit code
// (what failed goes to stderr). One test runs ranks as threads of one
// process. After every test nothing of the emulation may be left in
// /dev/shm, and a rank that destroyed its communicator maps none of it.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>
#include <dirent.h>
#include <nccl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// In a rank: count a failed check (the rank's exit code is the count) and
// print the first few.
std::atomic<int> g_printed{0};
#define RCHECK(cond)                                                                           \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      if (g_printed++ < 20)                                                                    \
        std::fprintf(stderr, "rank check failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);   \
      ++failures;                                                                              \
    }                                                                                          \
  } while (0)
#define RCHECK_NCCL(call) RCHECK((call) == ncclSuccess)

std::set<std::string> dev_shm() {
  std::set<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.insert(e->d_name);
    ::closedir(d);
  }
  return out;
}

// The emulation's segments this process still maps or holds.
int emu_segments() {
  int n = 0;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("synk-emu-nccl") != std::string::npos) ++n;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      char buf[256];
      const std::string p = std::string("/proc/self/fd/") + e->d_name;
      const ssize_t k = ::readlink(p.c_str(), buf, sizeof buf - 1);
      if (k > 0 && std::string(buf, static_cast<size_t>(k)).find("synk-emu-nccl") != std::string::npos) ++n;
    }
    ::closedir(d);
  }
  return n;
}

// Forks n ranks running body(rank) (its result is the exit code) and
// returns their wait statuses. A rank still running after `limit` is
// killed (SIGKILL status): a hang fails the test instead of stalling it.
std::vector<int> run_ranks(int n, const std::function<int(int)>& body,
                           std::chrono::seconds limit = std::chrono::seconds(30)) {
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    const pid_t p = ::fork();
    if (p == 0) {
      int code = 100;
      try {
        code = body(r);
      } catch (...) {
        code = 101;
      }
      std::fflush(stderr);
      ::_exit(code > 99 ? code : std::min(code, 99));
    }
    pids.push_back(p);
  }
  std::vector<int> status(static_cast<size_t>(n), -1);
  const auto deadline = Clock::now() + limit;
  for (int left = n; left > 0;) {
    for (size_t r = 0; r < pids.size(); ++r) {
      if (status[r] != -1) continue;
      int st = 0;
      if (::waitpid(pids[r], &st, WNOHANG) == pids[r]) {
        status[r] = st;
        --left;
      } else if (Clock::now() > deadline) {
        std::fprintf(stderr, "rank %zu still running after %llds: killed\n", r, static_cast<long long>(limit.count()));
        ::kill(pids[r], SIGKILL);
        ::waitpid(pids[r], &st, 0);
        status[r] = st;
        --left;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return status;
}

void expect_all_ok(const std::vector<int>& status) {
  for (size_t r = 0; r < status.size(); ++r) {
    EXPECT_TRUE(WIFEXITED(status[r])) << "rank " << r << " died, status " << status[r];
    if (WIFEXITED(status[r])) EXPECT_EQ(WEXITSTATUS(status[r]), 0) << "rank " << r << " had failed checks";
  }
}

ncclUniqueId new_id() {
  ncclUniqueId id;
  EXPECT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  return id;
}

// Polls a non-blocking communicator's state until it is not ncclInProgress.
ncclResult_t settle(ncclComm_t comm, std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto end = Clock::now() + limit;
  ncclResult_t st = ncclInProgress;
  while (Clock::now() < end) {
    if (ncclCommGetAsyncError(comm, &st) != ncclSuccess) return ncclInternalError;
    if (st != ncclInProgress) return st;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return ncclInProgress;
}

// A call on a communicator, blocking or not, issued and settled.
ncclResult_t done(ncclResult_t r, ncclComm_t comm) {
  if (r == ncclInProgress) return settle(comm);
  return r;
}

ncclComm_t init_blocking(const ncclUniqueId& id, int n, int rank) {
  ncclComm_t comm = nullptr;
  if (ncclCommInitRank(&comm, n, id, rank) != ncclSuccess) return nullptr;
  return comm;
}

template <class T> struct Dev {
  T* p = nullptr;
  size_t n;
  explicit Dev(size_t n) : n(n) { (void)cudaMalloc(reinterpret_cast<void**>(&p), (n ? n : 1) * sizeof(T)); }
  ~Dev() { (void)cudaFree(p); }
  void put(const std::vector<T>& v) { (void)cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    (void)cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
};

// Rank r's element i: small, distinct per rank, exact in every type.
template <class T> T val(int r, size_t i) { return static_cast<T>(static_cast<int>(i % 13) + 3 * r + 1); }

template <class T> T combine(ncclRedOp_t op, T a, T b) {
  switch (op) {
    case ncclSum: return a + b;
    case ncclProd: return a * b;
    case ncclMax: return a > b ? a : b;
    case ncclMin: return a < b ? a : b;
    default: return a;
  }
}

// The expected reduction of element i over n ranks, in rank order; avg as
// NCCL defines it (floats: terms pre-multiplied by 1/n; integers: sum / n).
template <class T> T expected(ncclRedOp_t op, int n, size_t i) {
  if (op == ncclAvg) {
    if constexpr (std::is_floating_point_v<T>) {
      const T s = T(1) / static_cast<T>(n);
      T acc = val<T>(0, i) * s;
      for (int r = 1; r < n; ++r) acc = acc + val<T>(r, i) * s;
      return acc;
    } else {
      T acc = 0;
      for (int r = 0; r < n; ++r) acc += val<T>(r, i);
      return static_cast<T>(acc / n);
    }
  }
  T acc = val<T>(0, i);
  for (int r = 1; r < n; ++r) acc = combine(op, acc, val<T>(r, i));
  return acc;
}

template <class T> std::vector<T> mine(int r, size_t n, size_t base = 0) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = val<T>(r, base + i);
  return v;
}

template <class T> ncclDataType_t type_of();
template <> ncclDataType_t type_of<int32_t>() { return ncclInt32; }
template <> ncclDataType_t type_of<int64_t>() { return ncclInt64; }
template <> ncclDataType_t type_of<float>() { return ncclFloat32; }
template <> ncclDataType_t type_of<double>() { return ncclFloat64; }

// Every collective synk uses, at one count, checked exactly. Returns the failures.
template <class T> int check_collectives(ncclComm_t comm, cudaStream_t s, int me, int n, size_t count) {
  int failures = 0;
  const ncclDataType_t t = type_of<T>();
  const size_t un = static_cast<size_t>(n);
  for (ncclRedOp_t op : {ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg}) {
    Dev<T> in(count), out(count);
    in.put(mine<T>(me, count));
    RCHECK_NCCL(done(ncclAllReduce(in.p, out.p, count, t, op, comm, s), comm));
    RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
    const auto got = out.get();
    for (size_t i = 0; i < count; ++i) RCHECK(got[i] == expected<T>(op, n, i));
    // In place.
    RCHECK_NCCL(done(ncclAllReduce(in.p, in.p, count, t, op, comm, s), comm));
    RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
    RCHECK(in.get() == got);
  }
  for (int root : {0, n - 1}) {
    {  // reduce
      Dev<T> in(count), out(count);
      in.put(mine<T>(me, count));
      out.put(std::vector<T>(count, T(-7)));
      RCHECK_NCCL(done(ncclReduce(in.p, out.p, count, t, ncclSum, root, comm, s), comm));
      RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
      const auto got = out.get();
      for (size_t i = 0; i < count; ++i) RCHECK(got[i] == (me == root ? expected<T>(ncclSum, n, i) : T(-7)));
    }
    {  // broadcast, in place (as synk calls it) and out of place
      Dev<T> buf(count), out(count);
      buf.put(mine<T>(me, count));
      RCHECK_NCCL(done(ncclBroadcast(buf.p, buf.p, count, t, root, comm, s), comm));
      RCHECK_NCCL(done(ncclBroadcast(buf.p, out.p, count, t, root, comm, s), comm));
      RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
      RCHECK(buf.get() == mine<T>(root, count));
      RCHECK(out.get() == mine<T>(root, count));
    }
    {  // gather
      Dev<T> in(count), out(count * un);
      in.put(mine<T>(me, count));
      out.put(std::vector<T>(count * un, T(-7)));
      RCHECK_NCCL(done(ncclGather(in.p, out.p, count, t, root, comm, s), comm));
      RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
      const auto got = out.get();
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < count; ++i)
          RCHECK(got[static_cast<size_t>(r) * count + i] == (me == root ? val<T>(r, i) : T(-7)));
    }
    {  // scatter: rank r gets block r of the root's buffer
      Dev<T> in(count * un), out(count);
      in.put(mine<T>(me, count * un));
      RCHECK_NCCL(done(ncclScatter(in.p, out.p, count, t, root, comm, s), comm));
      RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
      RCHECK(out.get() == mine<T>(root, count, static_cast<size_t>(me) * count));
    }
  }
  {  // all_gather, out of place and in place
    Dev<T> in(count), out(count * un);
    in.put(mine<T>(me, count));
    RCHECK_NCCL(done(ncclAllGather(in.p, out.p, count, t, comm, s), comm));
    RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
    std::vector<T> want;
    for (int r = 0; r < n; ++r) {
      const auto v = mine<T>(r, count);
      want.insert(want.end(), v.begin(), v.end());
    }
    RCHECK(out.get() == want);
    Dev<T> inplace(count * un);
    inplace.put(std::vector<T>(count * un, T(-7)));
    (void)cudaMemcpy(inplace.p + static_cast<size_t>(me) * count, in.p, count * sizeof(T), cudaMemcpyDeviceToDevice);
    RCHECK_NCCL(done(ncclAllGather(inplace.p + static_cast<size_t>(me) * count, inplace.p, count, t, comm, s), comm));
    RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
    RCHECK(inplace.get() == want);
  }
  {  // reduce_scatter: rank r gets the sum of everyone's block r
    Dev<T> in(count * un), out(count);
    in.put(mine<T>(me, count * un));
    RCHECK_NCCL(done(ncclReduceScatter(in.p, out.p, count, t, ncclSum, comm, s), comm));
    RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
    const auto got = out.get();
    for (size_t i = 0; i < count; ++i)
      RCHECK(got[i] == expected<T>(ncclSum, n, static_cast<size_t>(me) * count + i));
  }
  return failures;
}

// A ring of send/recv in one group (each rank sends to the next, receives
// from the previous) plus a gatherv-style group at `root` with uneven counts.
int check_p2p(ncclComm_t comm, cudaStream_t s, int me, int n, size_t count) {
  int failures = 0;
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  Dev<int32_t> out(count), in(count);
  out.put(mine<int32_t>(me, count));
  RCHECK_NCCL(ncclGroupStart());
  RCHECK_NCCL(ncclSend(out.p, count, ncclInt32, next, comm, s));
  RCHECK_NCCL(ncclRecv(in.p, count, ncclInt32, prev, comm, s));
  RCHECK_NCCL(done(ncclGroupEnd(), comm));
  RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
  RCHECK(in.get() == mine<int32_t>(prev, count));

  const int root = n - 1;
  std::vector<size_t> counts(static_cast<size_t>(n));
  size_t total = 0;
  for (int r = 0; r < n; ++r) total += counts[static_cast<size_t>(r)] = count + static_cast<size_t>(r);
  Dev<int32_t> part(counts[static_cast<size_t>(me)]), all(total);
  part.put(mine<int32_t>(me, counts[static_cast<size_t>(me)]));
  RCHECK_NCCL(ncclGroupStart());
  if (me == root) {
    size_t off = 0;
    for (int r = 0; r < n; ++r) {
      RCHECK_NCCL(ncclRecv(all.p + off, counts[static_cast<size_t>(r)], ncclInt32, r, comm, s));
      if (r == me) RCHECK_NCCL(ncclSend(part.p, counts[static_cast<size_t>(r)], ncclInt32, r, comm, s));
      off += counts[static_cast<size_t>(r)];
    }
  } else {
    RCHECK_NCCL(ncclSend(part.p, counts[static_cast<size_t>(me)], ncclInt32, root, comm, s));
  }
  RCHECK_NCCL(done(ncclGroupEnd(), comm));
  RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
  if (me == root) {
    std::vector<int32_t> want;
    for (int r = 0; r < n; ++r) {
      const auto v = mine<int32_t>(r, counts[static_cast<size_t>(r)]);
      want.insert(want.end(), v.begin(), v.end());
    }
    RCHECK(all.get() == want);
    if (all.get() != want) {
      const auto g = all.get();
      for (size_t i = 0; i < g.size(); ++i)
        if (g[i] != want[i]) std::fprintf(stderr, "count %zu: [%zu] got %d want %d\n", count, i, g[i], want[i]);
    }
  }
  return failures;
}

// Sizes of the issue plus one above a collective step and a p2p chunk.
const size_t kSizes[] = {0, 1, 7, 1001, 300001};

int all_checks(ncclComm_t comm, int me, int n) {
  int failures = 0;
  cudaStream_t s = nullptr;
  RCHECK(cudaStreamCreate(&s) == cudaSuccess);
  for (size_t count : kSizes) {
    failures += check_collectives<int32_t>(comm, s, me, n, count);
    failures += check_p2p(comm, s, me, n, count);
  }
  for (size_t count : {size_t{1}, size_t{1001}}) {
    failures += check_collectives<int64_t>(comm, s, me, n, count);
    failures += check_collectives<float>(comm, s, me, n, count);
    failures += check_collectives<double>(comm, s, me, n, count);
  }
  RCHECK(cudaStreamDestroy(s) == cudaSuccess);
  return failures;
}

class EmuNcclRanks : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { shm_before_ = dev_shm(); }
  void TearDown() override { EXPECT_EQ(dev_shm(), shm_before_) << "the emulation left something in /dev/shm"; }
  std::set<std::string> shm_before_;
};

TEST_P(EmuNcclRanks, EveryCollectiveExact) {
  const int n = GetParam();
  const ncclUniqueId id = new_id();
  expect_all_ok(run_ranks(n, [&](int me) {
    int failures = 0;
    RCHECK(cudaSetDevice(0) == cudaSuccess);
    ncclComm_t comm = init_blocking(id, n, me);
    RCHECK(comm != nullptr);
    if (!comm) return failures;
    int v = 0;
    RCHECK(ncclCommCount(comm, &v) == ncclSuccess && v == n);
    RCHECK(ncclCommUserRank(comm, &v) == ncclSuccess && v == me);
    failures += all_checks(comm, me, n);
    RCHECK_NCCL(ncclCommFinalize(comm));
    RCHECK_NCCL(ncclCommDestroy(comm));
    RCHECK(emu_segments() == 0);
    return failures;
  }));
}

// Collectives run in stream order: after the copies queued before them on
// the same stream, before those queued after (an emulation that ran them
// at the call would read the input before it arrived).
TEST_P(EmuNcclRanks, RunsInStreamOrder) {
  const int n = GetParam();
  const ncclUniqueId id = new_id();
  expect_all_ok(run_ranks(n, [&](int me) {
    int failures = 0;
    ncclComm_t comm = init_blocking(id, n, me);
    RCHECK(comm != nullptr);
    if (!comm) return failures;
    cudaStream_t s = nullptr;
    RCHECK(cudaStreamCreate(&s) == cudaSuccess);
    const size_t count = 300001;
    Dev<int32_t> in(count), out(count);
    const std::vector<int32_t> host_in = mine<int32_t>(me, count);
    std::vector<int32_t> host_out(count, -1);
    Dev<char> slow(size_t{64} << 20);
    for (int round = 0; round < 3; ++round) {
      // Keeps the stream busy for a while, so what follows runs well after the calls return.
      RCHECK(cudaMemsetAsync(slow.p, round, slow.n, s) == cudaSuccess);
      RCHECK(cudaMemcpyAsync(in.p, host_in.data(), count * sizeof(int32_t), cudaMemcpyHostToDevice, s) == cudaSuccess);
      RCHECK_NCCL(ncclAllReduce(in.p, out.p, count, ncclInt32, ncclSum, comm, s));
      RCHECK(cudaMemcpyAsync(host_out.data(), out.p, count * sizeof(int32_t), cudaMemcpyDeviceToHost, s) ==
             cudaSuccess);
      RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
      for (size_t i = 0; i < count; ++i) RCHECK(host_out[i] == expected<int32_t>(ncclSum, n, i));
      std::fill(host_out.begin(), host_out.end(), -1);
      RCHECK(cudaMemsetAsync(out.p, 0, count * sizeof(int32_t), s) == cudaSuccess);
    }
    RCHECK_NCCL(ncclCommDestroy(comm));
    RCHECK(cudaStreamDestroy(s) == cudaSuccess);
    return failures;
  }));
}

// As synk makes them: blocking = 0, every call settled by polling. Rank n-1
// joins late; the others see ncclInProgress meanwhile and may not issue.
TEST_P(EmuNcclRanks, NonBlockingInitAndCalls) {
  const int n = GetParam();
  const ncclUniqueId id = new_id();
  expect_all_ok(run_ranks(n, [&](int me) {
    int failures = 0;
    RCHECK(cudaSetDevice(0) == cudaSuccess);
    if (me == n - 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = nullptr;
    const ncclResult_t r = ncclCommInitRankConfig(&comm, n, id, me, &config);
    RCHECK(r == ncclInProgress || r == ncclSuccess);
    RCHECK(comm != nullptr);
    if (!comm) return failures;
    if (me != n - 1) {
      ncclResult_t st = ncclSuccess;
      RCHECK_NCCL(ncclCommGetAsyncError(comm, &st));
      RCHECK(st == ncclInProgress);
      Dev<int32_t> buf(4);
      cudaStream_t s0 = nullptr;
      RCHECK(cudaStreamCreate(&s0) == cudaSuccess);
      RCHECK(ncclAllReduce(buf.p, buf.p, 4, ncclInt32, ncclSum, comm, s0) == ncclInvalidUsage);
      RCHECK(cudaStreamDestroy(s0) == cudaSuccess);
    }
    RCHECK(settle(comm) == ncclSuccess);
    failures += all_checks(comm, me, n);
    const ncclResult_t f = ncclCommFinalize(comm);
    RCHECK(f == ncclSuccess || f == ncclInProgress);
    RCHECK(settle(comm) == ncclSuccess);
    RCHECK_NCCL(ncclCommDestroy(comm));
    RCHECK(emu_segments() == 0);
    return failures;
  }));
}

INSTANTIATE_TEST_SUITE_P(Ranks, EmuNcclRanks, ::testing::Values(2, 3, 4),
                         [](const auto& info) { return std::to_string(info.param) + "ranks"; });

class EmuNcclFaults : public ::testing::Test {
 protected:
  void SetUp() override { shm_before_ = dev_shm(); }
  void TearDown() override { EXPECT_EQ(dev_shm(), shm_before_) << "the emulation left something in /dev/shm"; }
  std::set<std::string> shm_before_;
};

// Rank 1 aborts while ranks 0 and 2 wait for it in an all-reduce: their
// waits end with an error, well within 2 s.
TEST_F(EmuNcclFaults, AbortWakesWaitingPeers) {
  const int n = 3;
  const ncclUniqueId id = new_id();
  expect_all_ok(run_ranks(n, [&](int me) {
    int failures = 0;
    ncclComm_t comm = init_blocking(id, n, me);
    RCHECK(comm != nullptr);
    if (!comm) return failures;
    if (me == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      RCHECK_NCCL(ncclCommAbort(comm));
      // Alive well past the peers' 2 s: only the abort may end their waits.
      std::this_thread::sleep_for(std::chrono::milliseconds(2500));
      return failures;
    }
    cudaStream_t s = nullptr;
    RCHECK(cudaStreamCreate(&s) == cudaSuccess);
    Dev<int32_t> buf(1001);
    const auto t0 = Clock::now();
    const ncclResult_t r = ncclAllReduce(buf.p, buf.p, 1001, ncclInt32, ncclSum, comm, s);
    RCHECK(r == ncclSuccess);
    RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
    ncclResult_t st = ncclSuccess;
    RCHECK_NCCL(ncclCommGetAsyncError(comm, &st));
    RCHECK(st == ncclRemoteError);
    RCHECK(std::string(ncclGetLastError(comm)).find("rank 1") != std::string::npos);
    RCHECK(Clock::now() - t0 < std::chrono::seconds(2));
    // A failed communicator refuses new work with its error.
    RCHECK(ncclAllReduce(buf.p, buf.p, 1, ncclInt32, ncclSum, comm, s) == ncclRemoteError);
    RCHECK_NCCL(ncclCommAbort(comm));
    RCHECK(cudaStreamDestroy(s) == cudaSuccess);
    RCHECK(emu_segments() == 0);
    return failures;
  }));
}

// ncclCommAbort from another thread (synk's watchdog) ends this rank's own
// wait on a peer that never comes; the peer's next call then fails.
TEST_F(EmuNcclFaults, AbortFromAnotherThreadEndsOwnWait) {
  const int n = 2;
  const ncclUniqueId id = new_id();
  expect_all_ok(run_ranks(n, [&](int me) {
    int failures = 0;
    ncclComm_t comm = init_blocking(id, n, me);
    RCHECK(comm != nullptr);
    if (!comm) return failures;
    cudaStream_t s = nullptr;
    RCHECK(cudaStreamCreate(&s) == cudaSuccess);
    Dev<int32_t> buf(7);
    if (me == 0) {
      std::thread watchdog([comm] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        (void)ncclCommAbort(comm);
      });
      const auto t0 = Clock::now();
      (void)ncclAllReduce(buf.p, buf.p, 7, ncclInt32, ncclSum, comm, s);
      RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
      watchdog.join();
      RCHECK(Clock::now() - t0 < std::chrono::seconds(2));
      RCHECK(emu_segments() == 0);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
      RCHECK(ncclAllReduce(buf.p, buf.p, 7, ncclInt32, ncclSum, comm, s) == ncclSuccess);
      RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
      ncclResult_t st = ncclSuccess;
      RCHECK_NCCL(ncclCommGetAsyncError(comm, &st));
      RCHECK(st == ncclRemoteError);
      RCHECK_NCCL(ncclCommAbort(comm));
    }
    RCHECK(cudaStreamDestroy(s) == cudaSuccess);
    return failures;
  }));
}

// Rank 2 is SIGKILLed while ranks 0 and 1 wait for it (a collective and a
// receive): both waits end with an error within 2 s.
TEST_F(EmuNcclFaults, KilledRankEndsPeersWaits) {
  const int n = 3;
  const ncclUniqueId id = new_id();
  const auto status = run_ranks(n, [&](int me) {
    int failures = 0;
    ncclComm_t comm = init_blocking(id, n, me);
    RCHECK(comm != nullptr);
    if (!comm) return failures;
    if (me == 2) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      ::raise(SIGKILL);
    }
    cudaStream_t s = nullptr;
    RCHECK(cudaStreamCreate(&s) == cudaSuccess);
    Dev<int32_t> buf(1001);
    const auto t0 = Clock::now();
    if (me == 0) {
      RCHECK(ncclAllReduce(buf.p, buf.p, 1001, ncclInt32, ncclSum, comm, s) == ncclSuccess);
    } else {
      RCHECK_NCCL(ncclGroupStart());
      RCHECK_NCCL(ncclRecv(buf.p, 1001, ncclInt32, 2, comm, s));
      RCHECK_NCCL(ncclGroupEnd());
    }
    RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
    ncclResult_t st = ncclSuccess;
    RCHECK_NCCL(ncclCommGetAsyncError(comm, &st));
    RCHECK(st == ncclRemoteError);
    RCHECK(Clock::now() - t0 < std::chrono::milliseconds(2300));  // 300 ms until the kill + 2 s
    RCHECK_NCCL(ncclCommAbort(comm));
    RCHECK(cudaStreamDestroy(s) == cudaSuccess);
    RCHECK(emu_segments() == 0);
    return failures;
  }, std::chrono::seconds(10));
  ASSERT_EQ(status.size(), 3u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(WIFEXITED(status[static_cast<size_t>(r)]));
    EXPECT_EQ(WEXITSTATUS(status[static_cast<size_t>(r)]), 0) << "rank " << r;
  }
  EXPECT_TRUE(WIFSIGNALED(status[2]) && WTERMSIG(status[2]) == SIGKILL);
}

// Stricter than NCCL: different collectives or counts on different ranks
// fail on every rank instead of hanging or corrupting memory.
TEST_F(EmuNcclFaults, MismatchedCallsFailEverywhere) {
  const int n = 2;
  const ncclUniqueId id = new_id();
  expect_all_ok(run_ranks(n, [&](int me) {
    int failures = 0;
    ncclComm_t comm = init_blocking(id, n, me);
    RCHECK(comm != nullptr);
    if (!comm) return failures;
    cudaStream_t s = nullptr;
    RCHECK(cudaStreamCreate(&s) == cudaSuccess);
    Dev<int32_t> buf(8);
    RCHECK_NCCL(ncclAllReduce(buf.p, buf.p, me == 0 ? 5 : 6, ncclInt32, ncclSum, comm, s));
    RCHECK(cudaStreamSynchronize(s) == cudaSuccess);
    ncclResult_t st = ncclSuccess;
    RCHECK_NCCL(ncclCommGetAsyncError(comm, &st));
    RCHECK(st == ncclInvalidUsage || st == ncclRemoteError);
    RCHECK_NCCL(ncclCommAbort(comm));
    RCHECK(cudaStreamDestroy(s) == cudaSuccess);
    return failures;
  }));
}

// Arguments NCCL refuses, refused at the call. (In a child: the test
// process itself never initialises CUDA, so later tests may still fork ranks.)
TEST_F(EmuNcclFaults, BadArguments) {
  expect_all_ok(run_ranks(1, [](int) {
    ncclComm_t comm = nullptr;
    ncclUniqueId bogus{};
    EXPECT_EQ(ncclCommInitRank(&comm, 2, bogus, 0), ncclInvalidArgument);
    const ncclUniqueId id = new_id();
    EXPECT_EQ(ncclCommInitRank(&comm, 2, id, 2), ncclInvalidArgument);
    EXPECT_EQ(ncclCommInitRank(&comm, 0, id, 0), ncclInvalidArgument);
    EXPECT_EQ(ncclCommInitRank(&comm, 1, id, 0), ncclSuccess);  // one rank: no peer to wait for
    if (!comm) return 1;
    int host[4] = {};
    cudaStream_t s = nullptr;
    EXPECT_EQ(cudaStreamCreate(&s), cudaSuccess);
    EXPECT_EQ(ncclAllReduce(host, host, 4, ncclInt32, ncclSum, comm, s), ncclInvalidArgument) << "host memory";
    Dev<int32_t> buf(4);
    EXPECT_EQ(ncclAllReduce(buf.p, buf.p, 5, ncclInt32, ncclSum, comm, s), ncclInvalidArgument) << "too short";
    EXPECT_EQ(ncclBroadcast(buf.p, buf.p, 4, ncclInt32, 1, comm, s), ncclInvalidArgument) << "root";
    EXPECT_EQ(ncclAllReduce(buf.p, buf.p, 4, ncclFloat16, ncclSum, comm, s), ncclInvalidArgument) << "half";
    EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
    buf.put({1, 2, 3, 4});
    EXPECT_EQ(ncclAllReduce(buf.p, buf.p, 4, ncclInt32, ncclProd, comm, s), ncclSuccess);
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(buf.get(), (std::vector<int32_t>{1, 2, 3, 4}));
    EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
    EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
    EXPECT_EQ(emu_segments(), 0);
    int v = 0;
    EXPECT_EQ(ncclGetVersion(&v), ncclSuccess);
    EXPECT_GE(v, NCCL_VERSION(2, 28, 0));
    EXPECT_STRNE(ncclGetErrorString(ncclRemoteError), ncclGetErrorString(ncclSuccess));
    return ::testing::Test::HasFailure() ? 1 : 0;
  }));
}

// Ranks as threads of one process (in a child, as above), each with its own
// communicator and, as NCCL requires, its own device (the emulation's
// default two): two ranks sharing a device and its legacy default stream
// would deadlock on a GPU too.
TEST_F(EmuNcclFaults, ThreadRanks) {
  expect_all_ok(run_ranks(1, [](int) {
    const int n = 2;
    const ncclUniqueId id = new_id();
    std::atomic<int> failures_all{0};
    std::vector<std::thread> ts;
    for (int me = 0; me < n; ++me)
      ts.emplace_back([&, me] {
        int failures = 0;
        RCHECK(cudaSetDevice(me) == cudaSuccess);
        ncclComm_t comm = init_blocking(id, n, me);
        RCHECK(comm != nullptr);
        if (comm) {
          cudaStream_t s = nullptr;
          RCHECK(cudaStreamCreate(&s) == cudaSuccess);
          for (size_t count : {size_t{1}, size_t{1001}}) {
            failures += check_collectives<int32_t>(comm, s, me, n, count);
            failures += check_p2p(comm, s, me, n, count);
          }
          RCHECK_NCCL(ncclCommDestroy(comm));
          RCHECK(cudaStreamDestroy(s) == cudaSuccess);
        }
        failures_all += failures;
      });
    for (auto& t : ts) t.join();
    int failures = failures_all.load();
    RCHECK(emu_segments() == 0);
    return failures;
  }));
}

}  // namespace
