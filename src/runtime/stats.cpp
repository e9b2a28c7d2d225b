// src/runtime/stats.cpp — Runtime::stats(): every rank's training-step
// phases (the rings of trace::StepLogs, written by the ranks as their steps
// end) as p50 / p90 / max, and the straggler: the rank and phase furthest
// above the ranks' median.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/core.hpp"

namespace synk {

const char* step_phase_name(StepPhase p) {
  return detail::trace::phase_name(static_cast<detail::trace::Phase>(p));
}

namespace {

PhaseTimes summarize(std::vector<float>& v) {
  PhaseTimes t;
  t.samples = v.size();
  if (v.empty()) return t;
  auto at = [&](double q) {
    const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return static_cast<double>(v[k]);
  };
  t.p50_ms = at(0.5);
  t.p90_ms = at(0.9);
  t.max_ms = static_cast<double>(*std::max_element(v.begin(), v.end()));
  return t;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

}  // namespace

StepStats Runtime::stats() {
  using namespace detail;
  RuntimeCore& c = checked("stats");
  Busy busy(c, "stats");
  StepStats s;
  if (!c.steps) return s;
  std::vector<float> v;
  for (int r = 0; r < c.n; ++r) {
    const trace::RankSteps* log = c.steps->rank(r);
    RankStepStats rs;
    rs.rank = c.base + r;
    rs.node = c.node;
    rs.steps = std::atomic_ref<const uint64_t>(log->steps).load(std::memory_order_acquire);
    const uint64_t kept = std::min<uint64_t>(rs.steps, trace::kStepRing);
    for (int p = 0; p < kStepPhases; ++p) {
      v.clear();
      for (uint64_t i = 0; i < kept; ++i) {
        const float x = log->ms[i][p];
        if (x >= 0) v.push_back(x);
      }
      rs.phase[p] = summarize(v);
    }
    s.ranks.push_back(rs);
  }
  // The straggler: the largest excess of a rank's p50 over the ranks'
  // median, phases but the all-reduce (where the others wait).
  double best = 0;
  for (int p = 0; p < kStepPhases; ++p) {
    if (static_cast<StepPhase>(p) == StepPhase::all_reduce) continue;
    std::vector<double> p50s;
    for (const RankStepStats& r : s.ranks)
      if (r.phase[p].samples) p50s.push_back(r.phase[p].p50_ms);
    const double med = median(p50s);
    for (const RankStepStats& r : s.ranks) {
      if (!r.phase[p].samples) continue;
      const double excess = r.phase[p].p50_ms - med;
      if (excess > best) {
        best = excess;
        s.slowest_rank = r.rank;
        s.slowest_phase = static_cast<StepPhase>(p);
        s.slowest_p50_ms = r.phase[p].p50_ms;
        s.median_p50_ms = med;
      }
    }
  }
  if (s.slowest_rank < 0) {
    // No rank stands out (or one rank): the busiest rank's longest phase.
    double most = -1;
    for (const RankStepStats& r : s.ranks) {
      if (!r.steps) continue;
      constexpr int busy[] = {static_cast<int>(StepPhase::inputs), static_cast<int>(StepPhase::forward_backward),
                              static_cast<int>(StepPhase::update)};
      double busy_ms = 0;
      int top = busy[1];
      for (int p : busy) {
        busy_ms += r.phase[p].p50_ms;
        if (r.phase[p].p50_ms > r.phase[top].p50_ms) top = p;
      }
      if (busy_ms <= most) continue;
      most = busy_ms;
      s.slowest_rank = r.rank;
      s.slowest_phase = static_cast<StepPhase>(top);
      s.slowest_p50_ms = r.phase[top].p50_ms;
      std::vector<double> p50s;
      for (const RankStepStats& q : s.ranks)
        if (q.phase[top].samples) p50s.push_back(q.phase[top].p50_ms);
      s.median_p50_ms = median(p50s);
    }
  }
  return s;
}

std::string StepStats::table() const {
  std::string out;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%5s %7s", "rank", "steps");
  out += buf;
  for (int p = 0; p < kStepPhases; ++p) {
    std::snprintf(buf, sizeof buf, "  %22s", step_phase_name(static_cast<StepPhase>(p)));
    out += buf;
  }
  out += "\n";
  std::snprintf(buf, sizeof buf, "%5s %7s", "", "");
  out += buf;
  for (int p = 0; p < kStepPhases; ++p) {
    std::snprintf(buf, sizeof buf, "  %22s", "p50 / p90 / max ms");
    out += buf;
  }
  out += "\n";
  for (const RankStepStats& r : ranks) {
    std::snprintf(buf, sizeof buf, "%5d %7llu", r.rank, static_cast<unsigned long long>(r.steps));
    out += buf;
    for (int p = 0; p < kStepPhases; ++p) {
      const PhaseTimes& t = r.phase[p];
      if (t.samples)
        std::snprintf(buf, sizeof buf, "  %6.2f / %6.2f / %6.2f", t.p50_ms, t.p90_ms, t.max_ms);
      else
        std::snprintf(buf, sizeof buf, "  %22s", "-");
      out += buf;
    }
    out += "\n";
  }
  if (slowest_rank >= 0) {
    std::snprintf(buf, sizeof buf, "slowest: rank %d, %s: p50 %.2f ms (median of the ranks %.2f ms)\n", slowest_rank,
                  step_phase_name(slowest_phase), slowest_p50_ms, median_p50_ms);
    out += buf;
  } else {
    out += "slowest: no training step yet\n";
  }
  return out;
}

}  // namespace synk
