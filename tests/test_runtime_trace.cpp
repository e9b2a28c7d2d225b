// Tests of the runtime's timeline (RuntimeOptions::trace, SYNK_TRACE): the
// file is valid Chrome trace-event JSON with a track per rank, every call's
// phases on every rank with the call number and function name, spans
// nested as they ran, what a killed worker recorded before it died, and a
// clear error for a path that cannot be written.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "comm/comm.hpp"  // GpuMarks::Lane
#include "trace/trace.hpp"
#include "support/proc_probe.hpp"
#include "support/runtime_helpers.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
using json = nlohmann::json;

std::string temp_path(const char* tag) {
  return ::testing::TempDir() + "synk_trace_" + tag + "_" + std::to_string(::getpid()) + ".json";
}

json read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "no trace file " << path;
  return json::parse(f);  // throws (fails the test) on invalid JSON
}

struct Span {
  std::string name, fn;
  double ts, dur;
  uint64_t call;
};

// The complete ("X") events by rank (tid).
std::map<int, std::vector<Span>> spans_by_rank(const json& t) {
  std::map<int, std::vector<Span>> out;
  for (const json& e : t.at("traceEvents")) {
    if (e.at("ph") != "X") continue;
    Span s{e.at("name"), "", e.at("ts"), e.at("dur"), 0};
    const json& a = e.at("args");
    if (a.contains("call")) s.call = a.at("call");
    if (a.contains("function")) s.fn = a.at("function");
    out[e.at("tid").get<int>()].push_back(s);
  }
  return out;
}

using Model = synk_test::SmallDense;

Array values(int64_t rows, int64_t cols, float phase) {
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.3f * static_cast<float>(i) + phase);
  return Array::from(v, {rows, cols});
}

TEST(RuntimeTrace, EveryRankRecordsEveryPhaseOfEveryCall) {
  const std::string path = temp_path("phases");
  std::remove(path.c_str());
  {
    Model m;
    RuntimeOptions o = synk_test::opts(2);
    o.trace = path.c_str();
    Runtime rt = synk::fork(o);
    ParallelFunction step = m.step(rt);
    ParallelFunction eval = rt.function({"eval", {m.x, m.y}, {{m.loss}}});
    rt.distribute();
    Data X = rt.data(values(10, 4, 0.f)), Y = rt.data(values(10, 2, 1.f));
    for (int i = 0; i < 3; ++i) step({X, Y});  // calls 1..3
    eval({X, Y});                             // call 4
    rt.all_reduce({m.l.W}, ReduceOp::avg);
    rt.close();
  }
  const json t = read_json(path);
  EXPECT_EQ(t.at("otherData").at("ranks"), 2);
  EXPECT_EQ(t.at("otherData").at("dropped_events"), 0);
  std::set<int> named;
  for (const json& e : t.at("traceEvents"))
    if (e.at("ph") == "M" && e.at("name") == "thread_name") named.insert(e.at("tid").get<int>());
  EXPECT_EQ(named, (std::set<int>{0, 1})) << "one named track per rank";

  const auto by_rank = spans_by_rank(t);
  ASSERT_EQ(by_rank.size(), 2u);
  for (const auto& [rank, spans] : by_rank) {
    auto count = [&](const std::string& name, uint64_t call) {
      int k = 0;
      for (const Span& s : spans) k += s.name == name && s.call == call;
      return k;
    };
    for (uint64_t call = 1; call <= 3; ++call) {
      EXPECT_EQ(count("forward+backward", call), 1) << "rank " << rank << " call " << call;
      EXPECT_EQ(count("gradient all-reduce", call), 1) << "rank " << rank << " call " << call;
      EXPECT_EQ(count("update", call), 1) << "rank " << rank << " call " << call;
      EXPECT_EQ(count("gather inputs", call), 1) << "rank " << rank << " call " << call;
    }
    EXPECT_EQ(count("forward+backward", 4), 1) << "rank " << rank << ": the eval call";
    EXPECT_EQ(count("gradient all-reduce", 4), 0) << "rank " << rank << ": a plain call all-reduces nothing";
    int collectives = 0;
    for (const Span& s : spans) collectives += s.name == "variable collectives";
    EXPECT_EQ(collectives, 1) << "rank " << rank;
    for (const Span& s : spans) {
      EXPECT_GE(s.ts, 0.0);
      EXPECT_GE(s.dur, 0.0);
      if (s.name == "forward+backward") EXPECT_EQ(s.fn, s.call <= 3 ? "train" : "eval") << "call " << s.call;
    }
    // Phases lie inside the rank's share of their call.
    for (const Span& c : spans) {
      if (c.name != "forward+backward" && c.name != "gradient all-reduce") continue;
      bool inside = false;
      for (const Span& s : spans)
        inside |= s.name == "rank share" && s.call == c.call && s.ts <= c.ts && c.ts + c.dur <= s.ts + s.dur + 1e-3;
      EXPECT_TRUE(inside) << "rank " << rank << ": " << c.name << " of call " << c.call << " outside its share";
    }
  }
  // The master's side of a call, and the workers' waits between commands.
  int master_calls = 0, waits = 0, worker_commands = 0;
  for (const Span& s : by_rank.at(0)) master_calls += s.name == "call";
  for (const Span& s : by_rank.at(1)) {
    waits += s.name == "wait for command";
    worker_commands += s.name == "command";
  }
  EXPECT_EQ(master_calls, 4);
  EXPECT_GE(waits, 5);
  EXPECT_GE(worker_commands, 5) << "3 steps, a call and a collective";
  std::remove(path.c_str());
}

TEST(RuntimeTrace, SynkTraceEnvironmentVariable) {
  const std::string path = temp_path("env");
  std::remove(path.c_str());
  ::setenv("SYNK_TRACE", path.c_str(), 1);
  {
    Model m;
    Runtime rt = synk::fork(synk_test::opts(2));
    ::unsetenv("SYNK_TRACE");
    ParallelFunction step = m.step(rt);
    rt.distribute();
    step({values(6, 4, 0.f), values(6, 2, 1.f)});
  }  // closed by the destructor
  const auto by_rank = spans_by_rank(read_json(path));
  EXPECT_EQ(by_rank.size(), 2u);
  std::remove(path.c_str());
}

TEST(RuntimeTrace, KeepsWhatAKilledWorkerRecorded) {
  const std::string path = temp_path("killed");
  std::remove(path.c_str());
  {
    Model m;
    RuntimeOptions o = synk_test::opts(2);
    o.trace = path.c_str();
    Runtime rt = synk::fork(o);
    ParallelFunction step = m.step(rt);
    rt.distribute();
    Data X = rt.data(values(8, 4, 0.f)), Y = rt.data(values(8, 2, 1.f));
    step({X, Y});
    step({X, Y});
    const std::vector<int> kids = synk_test::children();
    ASSERT_EQ(kids.size(), 1u);
    ::kill(kids[0], SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_THROW(step({X, Y}), WorkerError);
    rt.close();
  }
  const auto by_rank = spans_by_rank(read_json(path));
  ASSERT_EQ(by_rank.count(1), 1u) << "the dead worker's track is gone";
  std::set<uint64_t> calls;
  for (const Span& s : by_rank.at(1))
    if (s.name == "forward+backward") calls.insert(s.call);
  EXPECT_EQ(calls, (std::set<uint64_t>{1, 2}));
  std::remove(path.c_str());
}

int32_t slow_square(const int32_t& x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return x * x;
}

// Plain jobs appear on every rank's track, the master's included: with one
// rank (every job in the master), and with three, for map, argsort and
// futures.
TEST(RuntimeTrace, JobsAppearOnEveryRankTheMasterIncluded) {
  for (int ranks : {1, 3}) {
    SCOPED_TRACE("ranks " + std::to_string(ranks));
    const std::string path = temp_path("jobs");
    std::remove(path.c_str());
    {
      RuntimeOptions o = synk_test::opts(ranks);
      o.trace = path.c_str();
      Runtime rt = synk::fork(o);
      EXPECT_EQ(rt.map(&slow_square, std::vector<int32_t>(60, 3)).size(), 60u);
      Data d = rt.data(values(5000, 1, 0.f));
      EXPECT_EQ(rt.argsort(d).size(), 5000u);
      auto fs = rt.map_async(&slow_square, std::vector<int32_t>(30, 2));
      rt.join();
      rt.close();
    }
    const auto by_rank = spans_by_rank(read_json(path));
    ASSERT_EQ(by_rank.size(), static_cast<size_t>(ranks));
    for (const auto& [rank, spans] : by_rank) {
      std::set<uint64_t> calls;
      for (const Span& s : spans)
        if (s.name == "map jobs") calls.insert(s.call);
      // The map, argsort's two rounds at least, and the futures.
      EXPECT_GE(calls.size(), 3u) << "rank " << rank << " recorded jobs of " << calls.size() << " calls";
    }
    std::remove(path.c_str());
  }
}

TEST(RuntimeTrace, UnwritablePathIsRefusedAtFork) {
  RuntimeOptions o = synk_test::opts(2);
  o.trace = "/nonexistent-synk-dir/trace.json";
  try {
    Runtime rt = synk::fork(o);
    FAIL() << "fork accepted a trace path it cannot write";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-synk-dir/trace.json"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(synk_test::children().empty()) << "a refused fork left processes";
}

}  // namespace

// The GPU tracks (a CUDA rank's compute stream and comm stream, recorded by
// cuda::GpuMarks through trace::record_gpu): each lane of a rank that
// recorded any gets its own named track right after the rank's host track;
// a rank without GPU spans keeps its host track alone; bad lanes and kinds
// are dropped. Written from logs filled here, so it runs without a GPU.
TEST(TraceFile, GpuStreamsGetTracksOfTheirOwn) {
  namespace tr = synk::detail::trace;
  using Lane = synk::cuda::GpuMarks::Lane;
  const std::string path = temp_path("lanes");
  {
    tr::Logs logs(2, 64);
    logs.attach(1);
    const auto k = [](tr::Kind x) { return static_cast<uint16_t>(x); };
    tr::record(tr::Kind::compute, 1000, 5000, 7, 0);                                      // host track
    tr::record_gpu(k(tr::Kind::compute), 1500, 4800, 7, 0, Lane::compute);              // compute stream
    tr::record_gpu(k(tr::Kind::all_reduce), 3000, 3500, 7, 0, Lane::comm);              // during backward
    tr::record_gpu(k(tr::Kind::update), 5100, 5300, 7, 1, Lane::compute);
    tr::record_gpu(k(tr::Kind::update), 1, 2, 7, 1, 3);                                  // no such lane
    tr::record_gpu(static_cast<uint16_t>(tr::Kind::count_), 1, 2, 7, 1, Lane::compute);  // no such kind
    tr::detach();
    logs.write(path, {"train", "train/update"});
  }
  const json t = read_json(path);
  std::map<int, std::string> names;
  std::map<int, int> sort;
  for (const json& e : t.at("traceEvents")) {
    if (e.at("ph") != "M") continue;
    if (e.at("name") == "thread_name") names[e.at("tid").get<int>()] = e.at("args").at("name");
    if (e.at("name") == "thread_sort_index") sort[e.at("tid").get<int>()] = e.at("args").at("sort_index");
  }
  ASSERT_EQ(names.size(), 4u) << "rank 0 and 1 host tracks, rank 1's two streams";
  EXPECT_EQ(names.at(0).rfind("rank 0 master", 0), 0u) << names.at(0);
  EXPECT_EQ(names.at(1).rfind("rank 1 (pid", 0), 0u) << names.at(1);
  EXPECT_EQ(names.at(3), "rank 1 GPU compute stream");  // tid lane * ranks + rank
  EXPECT_EQ(names.at(5), "rank 1 GPU comm stream");
  EXPECT_LT(sort.at(0), sort.at(1));
  EXPECT_LT(sort.at(1), sort.at(3)) << "a rank's streams right after its host track";
  EXPECT_LT(sort.at(3), sort.at(5));
  const auto by_tid = spans_by_rank(t);
  ASSERT_EQ(by_tid.count(3), 1u);
  ASSERT_EQ(by_tid.count(5), 1u);
  ASSERT_EQ(by_tid.at(3).size(), 2u) << "the bad lane and kind were dropped";
  EXPECT_EQ(by_tid.at(3)[0].name, "forward+backward");
  EXPECT_EQ(by_tid.at(3)[1].name, "update");
  EXPECT_EQ(by_tid.at(3)[1].fn, "train/update");
  ASSERT_EQ(by_tid.at(5).size(), 1u);
  const Span& ar = by_tid.at(5)[0];
  EXPECT_EQ(ar.name, "gradient all-reduce");
  EXPECT_EQ(ar.call, 7u);
  EXPECT_DOUBLE_EQ(ar.ts, 2.0);  // us from the first event (t0 1000 ns)
  EXPECT_DOUBLE_EQ(ar.dur, 0.5);
  EXPECT_EQ(by_tid.at(1).size(), 1u) << "the host track keeps its own span";
  std::remove(path.c_str());
}
