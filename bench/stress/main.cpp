// synk-stress — runs the runtime's fault matrix (fault_matrix.hpp: worker
// SIGKILL / SIGSEGV / SIGSTOP / exit(0) / exception / out of memory while
// idle, mid-call, mid-collective and mid-distribute; the master receiving
// SIGINT / SIGTERM / SIGKILL) N times, every case in a fresh runtime in a
// fresh harness process under a per-case watchdog, and counts what a user
// must never see: leaked processes, leaked shared-memory segments, hangs and
// failed expectations. Prints a summary and the per-case median time to
// raise; writes them as JSON with --json. docs/faults.md is made from it.
//
//   synk-stress --reps 100 --timeout-ms 300 --json bench/results/stress_cpu.json
//   synk-stress --reps 1 --markdown        # the table for docs/faults.md
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/bench_main.hpp"
#include "fault_matrix.hpp"

namespace {

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5)];
}

int run(int argc, char** argv) {
  CLI::App app{"synk-stress: the runtime's fault matrix, repeated"};
  int reps = 10;
  synk_faults::Settings s;
  std::string json_path, only;
  bool markdown = false, verbose = false;
  app.add_option("--reps", reps, "passes over the matrix")->check(bench::integer(1, 100000));
  app.add_option("--timeout-ms", s.timeout_ms, "the runtime's timeout and collective_timeout (the hang cases)")
      ->check(bench::integer(50, 600000));
  app.add_option("--only", only, "run only cases whose name contains this");
  app.add_option("--json", json_path, "write the results as JSON to this file")->check(bench::writable_file());
  app.add_flag("--markdown", markdown, "also print the table as Markdown");
  app.add_flag("-v,--verbose", verbose, "print every failed case with its message");
  if (!bench::parse(app, argc, argv)) return 0;

  std::vector<synk_faults::Case> cases;
  for (const auto& c : synk_faults::matrix())
    if (only.empty() || c.name().find(only) != std::string::npos) cases.push_back(c);
  if (cases.empty()) throw synk::ArgumentError("--only " + only + ": no case of the fault matrix has that in its name");
  struct Stat {
    std::vector<double> secs;
    int failed = 0, hangs = 0, leaked_procs = 0, leaked_segs = 0;
    std::string example, why;
  };
  std::vector<Stat> stats(cases.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < cases.size(); ++i) {
      const synk_faults::Outcome o = synk_faults::run_case(cases[i], s);
      Stat& st = stats[i];
      if (o.seconds >= 0) st.secs.push_back(o.seconds);
      st.hangs += o.hang;
      st.leaked_procs += o.leaked_procs;
      st.leaked_segs += o.leaked_segs;
      if (!o.ok) {
        ++st.failed;
        if (st.why.empty()) st.why = o.why;
        if (verbose)
          std::fprintf(stderr, "rep %d %s: FAILED: %s [%s]\n", r, cases[i].name().c_str(), o.why.c_str(),
                       o.message.c_str());
      }
      if (st.example.empty() && !o.message.empty()) st.example = o.message;
    }
    if (reps >= 10 && (r + 1) % (reps / 10) == 0)
      std::fprintf(stderr, "  %d/%d passes, %.0f s\n", r + 1, reps, synk_faults::since(t0));
  }
  const double total_s = synk_faults::since(t0);

  int failed = 0, hangs = 0, lp = 0, ls = 0;
  std::printf("%-36s %6s %10s %10s %6s %6s %6s\n", "case", "runs", "median_s", "max_s", "fail", "hang", "leaks");
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < cases.size(); ++i) {
    const Stat& st = stats[i];
    failed += st.failed;
    hangs += st.hangs;
    lp += st.leaked_procs;
    ls += st.leaked_segs;
    const double med = percentile(st.secs, 0.5), mx = percentile(st.secs, 1.0);
    std::printf("%-36s %6d %10.4f %10.4f %6d %6d %6d\n", cases[i].name().c_str(), reps, med, mx, st.failed, st.hangs,
                st.leaked_procs + st.leaked_segs);
    rows.push_back({{"case", cases[i].name()},
                    {"fault", synk_faults::fault_name(cases[i].fault)},
                    {"phase", synk_faults::phase_name(cases[i].phase)},
                    {"expected", cases[i].expected()},
                    {"runs", reps},
                    {"median_s", med},
                    {"p90_s", percentile(st.secs, 0.9)},
                    {"max_s", mx},
                    {"failed", st.failed},
                    {"hangs", st.hangs},
                    {"leaked_processes", st.leaked_procs},
                    {"leaked_segments", st.leaked_segs},
                    {"first_failure", st.why},
                    {"example_message", st.example}});
  }
  std::printf("summary: %zu cases x %d reps = %zu runs in %.1f s: leaked processes %d, leaked segments %d, hangs %d, "
              "failed checks %d\n",
              cases.size(), reps, cases.size() * static_cast<size_t>(reps), total_s, lp, ls, hangs, failed);
  if (markdown) {
    std::printf("\n| case | expected outcome | median time to raise (s) | max (s) | example message |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < cases.size(); ++i) {
      std::string ex = stats[i].example;
      for (char& ch : ex)
        if (ch == '|') ch = '/';
      std::printf("| %s | %s | %.4f | %.4f | %s |\n", cases[i].name().c_str(), cases[i].expected().c_str(),
                  percentile(stats[i].secs, 0.5), percentile(stats[i].secs, 1.0), ex.c_str());
    }
  }
  if (!json_path.empty()) {
    nlohmann::json j = {{"reps", reps},
                        {"timeout_ms", s.timeout_ms},
                        {"cases", cases.size()},
                        {"runs", cases.size() * static_cast<size_t>(reps)},
                        {"total_s", total_s},
                        {"leaked_processes", lp},
                        {"leaked_segments", ls},
                        {"hangs", hangs},
                        {"failed_checks", failed},
                        {"rows", rows}};
    bench::write_json(json_path, j);
  }
  return (failed || hangs || lp || ls) ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  return bench::guarded_main("synk-stress", run, argc, argv, 2);
}
