// bench/jobs/main.cpp — synk-jobs: the cost of plain jobs and the parallel
// argsort, the synk side of bench/peers/jobs_vs_pool.py.
//
//   synk-jobs --workers 2 --tiny 10000 --sort 10000000 --repeat 5 --json out.json
//
// tiny: N empty jobs (identity on an int) through map(), apply_async() +
// get() and map_async(); wall time and time per job (median of --repeat
// runs). --retries N passes N to all three (jobs with retries run on the
// workers only, one at a time: docs/faults.md). sort: argsort of N uniform random floats in a Data over the ranks
// against std::stable_sort of an index vector by value on one core (the
// one-core argsort), and std::stable_sort of the values themselves; the
// parallel result is checked element for element.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/bench_main.hpp"
#include "synk/synk.hpp"

namespace {

int identity(const int& x) { return x; }

template <class F> double seconds(F&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int run(int argc, char** argv) {
  int workers = 2, repeat = 5, retries = 0;
  int64_t tiny = 10000, sort_n = 10'000'000;
  std::string json_path;
  CLI::App app{"synk-jobs: per-job overhead of map / apply_async and the parallel argsort"};
  app.add_option("--workers", workers, "ranks in total")->check(bench::integer(1, 256));
  app.add_option("--tiny", tiny, "empty jobs per run")->check(bench::integer(1, 100'000'000));
  app.add_option("--sort", sort_n, "floats to argsort (0: skip)")->check(bench::integer(0, 2'000'000'000));
  app.add_option("--retries", retries, "retry count of every job (map, apply_async, map_async)")
      ->check(bench::integer(0, 1000));
  app.add_option("--repeat", repeat, "runs of each measurement (the median is reported)")->check(bench::integer(1, 1000));
  app.add_option("--json", json_path, "write the results here")->check(bench::writable_file());
  if (!bench::parse(app, argc, argv)) return 0;

  synk::Runtime rt = synk::fork({.workers = workers});
  std::vector<int> jobs(static_cast<size_t>(tiny));
  std::iota(jobs.begin(), jobs.end(), 0);
  std::vector<double> t_map, t_async, t_map_async;
  for (int r = 0; r < repeat + 1; ++r) {  // the first round warms up
    std::vector<int> out;
    const double a = seconds([&] { out = rt.map(&identity, jobs, retries); });
    const double b = seconds([&] {
      std::vector<synk::Future<int>> fs;
      fs.reserve(jobs.size());
      for (int j : jobs) fs.push_back(rt.apply_async(&identity, j, retries));
      for (auto& f : fs) (void)f.get();
    });
    const double c = seconds([&] {
      auto fs = rt.map_async(&identity, jobs, retries);
      for (auto& f : fs) (void)f.get();
      rt.join();
    });
    if (out != jobs) throw synk::Error("map gave wrong results");
    if (r == 0) continue;
    t_map.push_back(a);
    t_async.push_back(b);
    t_map_async.push_back(c);
  }
  const double n = static_cast<double>(tiny);
  std::printf("cpu: %d usable, ranks: %d, retries: %d\n", synk::cpu_count(), rt.size(), retries);
  std::printf("%-26s %12s %14s\n", ("empty jobs x" + std::to_string(tiny)).c_str(), "wall s", "us per job");
  std::printf("%-26s %12.5f %14.3f\n", "map", median(t_map), median(t_map) / n * 1e6);
  std::printf("%-26s %12.5f %14.3f\n", "apply_async + get", median(t_async), median(t_async) / n * 1e6);
  std::printf("%-26s %12.5f %14.3f\n", "map_async + get", median(t_map_async), median(t_map_async) / n * 1e6);

  nlohmann::json j = {{"ranks", rt.size()},
                      {"cpu_count", synk::cpu_count()},
                      {"tiny_jobs", tiny},
                      {"retries", retries},
                      {"map_s", t_map},
                      {"apply_async_s", t_async},
                      {"map_async_s", t_map_async},
                      {"map_us_per_job", median(t_map) / n * 1e6},
                      {"apply_async_us_per_job", median(t_async) / n * 1e6},
                      {"map_async_us_per_job", median(t_map_async) / n * 1e6}};

  if (sort_n > 0) {
    std::mt19937 gen(1);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    std::vector<float> x(static_cast<size_t>(sort_n));
    for (float& v : x) v = u(gen);
    synk::Data d = rt.data(synk::Array::from(x, {sort_n}).view());
    std::vector<double> t_par, t_ref, t_values;
    std::vector<int64_t> par, ref(static_cast<size_t>(sort_n));
    bool equal = true;
    for (int r = 0; r < repeat; ++r) {
      t_par.push_back(seconds([&] { par = rt.argsort(d); }));
      t_ref.push_back(seconds([&] {
        std::iota(ref.begin(), ref.end(), 0);
        std::stable_sort(ref.begin(), ref.end(), [&x](int64_t a, int64_t b) { return x[a] < x[b]; });
      }));
      equal = equal && par == ref;
      std::vector<float> y = x;
      t_values.push_back(seconds([&] { std::stable_sort(y.begin(), y.end()); }));
    }
    std::printf("%-40s %10s %9s\n", ("argsort of " + std::to_string(sort_n) + " floats").c_str(), "wall s", "ratio");
    std::printf("%-40s %10.4f %9.2f\n", "std::stable_sort of indices, 1 core", median(t_ref), 1.0);
    std::printf("%-40s %10.4f %9.2f\n", ("synk argsort, " + std::to_string(rt.size()) + " ranks").c_str(),
                median(t_par), median(t_ref) / median(t_par));
    std::printf("%-40s %10.4f %9s\n", "(std::stable_sort of the values, 1 core)", median(t_values), "");
    std::printf("argsort equal: %s\n", equal ? "yes" : "NO");
    j["sort_n"] = sort_n;
    j["argsort_s"] = t_par;
    j["stable_sort_indices_s"] = t_ref;
    j["stable_sort_values_s"] = t_values;
    j["argsort_speedup"] = median(t_ref) / median(t_par);
    j["argsort_equal"] = equal;
    if (!equal) throw synk::Error("the parallel argsort differs from std::stable_sort");
  }
  if (!json_path.empty()) bench::write_json(json_path, j);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return bench::guarded_main("synk-jobs", run, argc, argv); }
