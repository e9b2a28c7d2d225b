// examples/sharedmem_style.cpp — what a sharedmem program does (seed 004),
// in synk: a large array in shared memory, split into chunks that the ranks
// take one at a time; per-rank storage (sharedmem's pool.tls) counts each
// rank's chunks; a critical section updates a shared counter; an ordered
// section writes one line per chunk in chunk order; partial sums are
// reduced in the master as they arrive; the rows' order comes from the
// parallel argsort; and jobs write their results into a shared array made
// with zeros (sharedmem.empty). Every result is checked against a serial
// computation; the program exits 1 on any difference.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "synk/synk.hpp"

namespace {

struct Chunk {
  synk::DataRef values;   // [n] f32, read
  synk::DataRef counter;  // [1] i32, incremented in a critical section
  synk::DataRef lines;    // [chunks + 1] i32: [0] lines written, then chunk ids in the order written
  synk::DataRef maxima;   // [chunks] f32, written by the job (a shared result array)
  int64_t begin, end;
};

struct PerRank {
  int chunks = 0;
};

// A partial sum (a double: the master adds them up), and as side effects
// the chunk's maximum, a counter bump and an ordered line.
double work(synk::JobContext& ctx, const Chunk& c) {
  std::span<const float> v = ctx.rows<float>(c.values, c.begin, c.end - c.begin);
  double sum = 0;
  float mx = -INFINITY;
  for (float x : v) {
    sum += x;
    mx = std::max(mx, x);
  }
  ctx.rows<float>(c.maxima)[ctx.job()] = mx;
  ctx.local<PerRank>().chunks += 1;  // lives on this rank from job to job
  ctx.critical([&] { ctx.rows<int32_t>(c.counter)[0] += 1; });
  ctx.ordered([&] {
    std::span<int32_t> l = ctx.rows<int32_t>(c.lines);
    l[1 + static_cast<size_t>(l[0])] = static_cast<int32_t>(ctx.job());
    l[0] += 1;
    std::printf("chunk %3llu on rank %d: sum %.3f\n", static_cast<unsigned long long>(ctx.job()), ctx.rank(), sum);
    std::fflush(stdout);
  });
  return sum;
}

int chunks_of_rank(synk::JobContext& ctx, const int&) { return ctx.local<PerRank>().chunks; }

}  // namespace

int main() {
  synk::Runtime rt = synk::fork();  // SYNK_WORKERS, OMP_NUM_THREADS or synk::cpu_count() ranks
  const int64_t n = 200000, chunk = 10000, chunks = n / chunk;
  std::vector<float> v(static_cast<size_t>(n));
  uint32_t s = 12345;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = static_cast<float>(s >> 8) / 16777216.f - 0.5f;
  }
  synk::Data values = rt.data(synk::Array::from(v, {n}).view());
  synk::Data counter = rt.zeros(synk::i32, {1});
  synk::Data lines = rt.zeros(synk::i32, {chunks + 1});
  synk::Data maxima = rt.empty(synk::f32, {chunks});
  std::vector<Chunk> jobs;
  for (int64_t c = 0; c < chunks; ++c)
    jobs.push_back({values.ref(), counter.ref(), lines.ref(), maxima.ref(), c * chunk, (c + 1) * chunk});

  // Reduce in the master as the partial sums arrive (sharedmem's reduce).
  int folded = 0;
  const double total = rt.map_reduce(&work, jobs, 0.0, [&](double acc, double part) {
    ++folded;
    return acc + part;
  });

  bool ok = true;
  auto check = [&ok](bool c, const char* what) {
    if (!c) std::fprintf(stderr, "mismatch: %s\n", what);
    ok = ok && c;
  };
  double serial = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    double part = 0;
    for (int64_t i = c * chunk; i < (c + 1) * chunk; ++i) part += v[static_cast<size_t>(i)];
    serial += part;
    const float mx = *std::max_element(v.begin() + c * chunk, v.begin() + (c + 1) * chunk);
    check(static_cast<const float*>(maxima.raw())[c] == mx, "chunk maximum");
  }
  check(folded == chunks, "every partial sum folded once");
  check(std::fabs(total - serial) < 1e-6 * std::max(1.0, std::fabs(serial)), "total");
  check(static_cast<const int32_t*>(counter.raw())[0] == chunks, "critical counter");
  const int32_t* l = static_cast<const int32_t*>(lines.raw());
  check(l[0] == chunks, "ordered line count");
  for (int64_t c = 0; c < chunks; ++c) check(l[1 + c] == c, "ordered lines in chunk order");

  // Per-rank storage: the chunks each rank took add up.
  int taken = 0;
  for (int k : rt.map(&chunks_of_rank, std::vector<int>(static_cast<size_t>(rt.size()) * 4, 0))) taken = std::max(taken, k);
  check(taken >= 1 && taken <= chunks, "per-rank chunk count");

  // argsort over all ranks, as numpy.argsort (stable).
  std::vector<int64_t> order = rt.argsort(values);
  std::vector<int64_t> want(static_cast<size_t>(n));
  std::iota(want.begin(), want.end(), 0);
  std::stable_sort(want.begin(), want.end(), [&](int64_t a, int64_t b) { return v[a] < v[b]; });
  check(order == want, "argsort");
  std::printf("sum %.6f (serial %.6f), %lld chunks on %d ranks, smallest value at row %lld: %s\n", total, serial,
              static_cast<long long>(chunks), rt.size(), static_cast<long long>(order[0]), ok ? "ok" : "MISMATCH");
  return ok ? 0 : 1;
}
