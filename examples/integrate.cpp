// examples/integrate.cpp — the numeric integration of the multiprocessing
// lecture (seed 003) in C++: the integral of f(x) = 1/(1+x^2) over [0, 1]
// (pi/4) estimated from nSample sorted uniform points, for every nSample in
// [0, samples): serially, then over the ranks with apply_async + get() as
// the Python version does with Pool.apply_async, then with one map(). The
// convergence list is the same bit for bit, and the wall times are printed
// side by side.
//
//   integrate                        # 10,000 sample sizes, the default ranks
//   integrate --samples 10000 --workers 2 --repeat 5 --json out.json
//
// numpy draws and sorts its points in vectorised C; a naive C++ port
// (std::mt19937 + std::sort of doubles) is slower than that, so this one
// uses a fast generator (splitmix64) and sorts the 32-bit draws with an LSD
// radix sort before scaling them (scaling is monotone, so sorting the
// integers sorts the points).
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "synk/synk.hpp"

namespace {

double f(double x) { return 1.0 / (1.0 + x * x); }

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// LSD radix sort of 32-bit keys, 3 passes of 11 bits.
void radix_sort(std::vector<uint32_t>& a, std::vector<uint32_t>& tmp) {
  tmp.resize(a.size());
  for (int shift = 0; shift < 33; shift += 11) {
    std::array<uint32_t, 2049> count{};
    for (uint32_t v : a) ++count[((v >> shift) & 2047u) + 1];
    for (size_t i = 1; i < count.size(); ++i) count[i] += count[i - 1];
    for (uint32_t v : a) tmp[count[(v >> shift) & 2047u]++] = v;
    a.swap(tmp);
  }
}

struct Job {
  int32_t n_sample;
  double xmin, xmax;
};

struct Estimate {
  int32_t n_sample;
  double area;
};

// The lecture's integral(nSample, f, xmin, xmax): sort nSample uniform
// points, sum diff(sample) * f(sample[1:]). Seeded by nSample, so any rank
// gives the same estimate.
Estimate integral(const Job& j) {
  thread_local std::vector<uint32_t> u, tmp;
  uint64_t s = 0x5eed0000ull + static_cast<uint64_t>(j.n_sample);
  u.resize(static_cast<size_t>(j.n_sample));
  for (uint32_t& v : u) v = static_cast<uint32_t>(splitmix64(s) >> 32);
  radix_sort(u, tmp);
  const double scale = (j.xmax - j.xmin) / 4294967296.0;
  double area = 0, prev = 0;
  for (size_t k = 0; k < u.size(); ++k) {
    const double x = j.xmin + u[k] * scale;
    if (k > 0) area += (x - prev) * f(x);
    prev = x;
  }
  return {j.n_sample, area};
}

std::vector<double> serial(int samples, double lb, double ub) {
  std::vector<double> out;
  out.reserve(static_cast<size_t>(samples));
  for (int s = 0; s < samples; ++s) out.push_back(integral({s, lb, ub}).area);
  return out;
}

// As the lecture: one apply_async per sample size, get() each, sort by
// nSample, keep the areas.
std::vector<double> parallel_async(synk::Runtime& rt, int samples, double lb, double ub) {
  std::vector<synk::Future<Estimate>> pending;
  pending.reserve(static_cast<size_t>(samples));
  for (int s = 0; s < samples; ++s) pending.push_back(rt.apply_async(&integral, Job{s, lb, ub}));
  std::vector<Estimate> results;
  results.reserve(pending.size());
  for (auto& p : pending) results.push_back(p.get());
  std::sort(results.begin(), results.end(), [](const Estimate& a, const Estimate& b) { return a.n_sample < b.n_sample; });
  std::vector<double> out;
  for (const Estimate& e : results) out.push_back(e.area);
  return out;
}

std::vector<double> parallel_map(synk::Runtime& rt, int samples, double lb, double ub) {
  std::vector<Job> jobs;
  for (int s = 0; s < samples; ++s) jobs.push_back({s, lb, ub});
  std::vector<double> out;
  for (const Estimate& e : rt.map(&integral, jobs)) out.push_back(e.area);
  return out;
}

template <class F> double seconds(F&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int samples = 10000, workers = 0, repeat = 3;
  const char* json = nullptr;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--samples") samples = std::atoi(argv[i + 1]);
    else if (a == "--workers") workers = std::atoi(argv[i + 1]);
    else if (a == "--repeat") repeat = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--json") json = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: integrate [--samples N] [--workers N] [--repeat K] [--json FILE]\n");
      return 2;
    }
  }
  synk::Runtime rt = synk::fork({.workers = workers});
  std::printf("synk::cpu_count() = %d, ranks = %d, samples = %d\n", synk::cpu_count(), rt.size(), samples);

  std::vector<double> ts, ta, tm;
  std::vector<double> ref, a, m;
  for (int r = 0; r < repeat; ++r) {
    ts.push_back(seconds([&] { ref = serial(samples, 0, 1); }));
    ta.push_back(seconds([&] { a = parallel_async(rt, samples, 0, 1); }));
    tm.push_back(seconds([&] { m = parallel_map(rt, samples, 0, 1); }));
  }
  if (a != ref || m != ref) {
    std::fprintf(stderr, "the parallel convergence list differs from the serial one\n");
    return 1;
  }
  std::printf("convergence (nSample: estimate of pi/4 = %.6f)\n", M_PI / 4);
  for (int s = 1; s < samples; s = s < 10 ? s + 3 : s * 10)
    std::printf("  %6d: %.6f\n", s, ref[static_cast<size_t>(s)]);
  std::printf("  %6d: %.6f\n", samples - 1, ref.back());
  if (samples > 1000 && std::fabs(ref.back() - M_PI / 4) > 1e-3) {
    std::fprintf(stderr, "did not converge: %.6f\n", ref.back());
    return 1;
  }
  const double s = median(ts), pa = median(ta), pm = median(tm);
  std::printf("%-28s %10s %9s\n", "version (median of runs)", "wall s", "speed-up");
  std::printf("%-28s %10.4f %9.2f\n", "serial", s, 1.0);
  std::printf("%-28s %10.4f %9.2f\n", ("apply_async x" + std::to_string(rt.size())).c_str(), pa, s / pa);
  std::printf("%-28s %10.4f %9.2f\n", ("map x" + std::to_string(rt.size())).c_str(), pm, s / pm);
  if (json) {
    FILE* out = std::fopen(json, "w");
    if (!out) return 1;
    auto list = [&](const std::vector<double>& v) {
      std::string t = "[";
      for (size_t i = 0; i < v.size(); ++i) t += (i ? ", " : "") + std::to_string(v[i]);
      return t + "]";
    };
    std::fprintf(out,
                 "{\"program\": \"synk integrate\", \"ranks\": %d, \"samples\": %d, \"serial_s\": %s, "
                 "\"apply_async_s\": %s, \"map_s\": %s, \"last_estimate\": %.9f}\n",
                 rt.size(), samples, list(ts).c_str(), list(ta).c_str(), list(tm).c_str(), ref.back());
    std::fclose(out);
  }
  return 0;
}
