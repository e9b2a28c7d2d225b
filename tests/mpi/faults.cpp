// tests/mpi/faults.cpp — a multi-node job that fails on purpose (label
// `mpi`; tests/mpi/fault_check.sh runs it under mpirun with 2 nodes of 2
// ranks and checks how the job ends):
//   kill_worker  node 1's worker is SIGKILLed inside a map job
//   kill_node    node 1's master SIGKILLs itself between training steps
//   mismatch     node 0 calls one function, node 1 another
//   mismatch_caught  the same, but every node catches the ArgumentError,
//                sees its next call refused, closes and returns 0 (printing
//                "node K: caught: ...", "node K: next call: ...",
//                "node K: closed")
//   heal         node 1's worker is SIGKILLed inside a map job; every node
//                catches the error, calls heal(), trains on, closes and
//                returns 0 ("node K: caught: ...", "node K: healed",
//                "node K: closed")
//   heal_missing the same, but node 1 does not call heal(): node 0's heal()
//                gives up after the collective timeout (3 s here) with an
//                error saying every node must call heal()
// Prints "FAULT_AT <ms since the epoch>" just before the fault and, on the
// error each node then gets, "node K: <message>"; exits 1 on an error.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "synk/synk.hpp"

namespace {

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void fault_at() {
  std::printf("FAULT_AT %lld\n", now_ms());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "";
  int node = -1;
  try {
    const bool healing = scenario == "heal" || scenario == "heal_missing";
    synk::RuntimeOptions o{.workers = 2, .seed = 1, .multi_node = synk::MultiNode::mpi};
    if (healing) o.collective_timeout = std::chrono::seconds(3);
    synk::Runtime rt = synk::fork(o);
    node = rt.node();
    synk::Graph g;
    synk::Tensor x = g.input("x", synk::f32, {synk::batch, 4});
    synk::Tensor W = g.variable("W", {4, 2}, synk::Init::uniform(-1, 1));
    synk::Tensor loss = synk::mean(synk::square(synk::matmul(x, W)));
    synk::ParallelFunction step = rt.train_step(
        {.name = "step", .inputs = {x}, .outputs = {{loss}}, .loss = loss, .params = {W},
         .optimizer = [](auto& p, auto& gr) { return synk::optim::sgd(p, gr, {.lr = 0.01f}); }});
    synk::ParallelFunction f = rt.function({"f", {x}, {{synk::sum(x), synk::Collect::sum}}});
    synk::ParallelFunction h = rt.function({"h", {x}, {{synk::mean(x), synk::Collect::avg}}});
    rt.distribute();
    synk::Data X = rt.data(synk::Array(synk::f32, {64, 4}));
    for (int i = 0; i < 3; ++i) step({X});
    // Each job carries its node (the workers were forked before fork()
    // returned the node): node 1's worker kills itself.
    auto kill_in_map = [&] {
      std::vector<int> jobs(64, node);
      rt.map(
          [](const synk::JobContext& ctx, int job_node) {
            if (job_node == 1 && ctx.rank() != 0) {
              fault_at();
              ::kill(::getpid(), SIGKILL);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            return 0;
          },
          jobs);
    };
    if (scenario == "kill_worker") {
      kill_in_map();
    } else if (healing) {
      try {
        kill_in_map();
        std::printf("node %d: the map survived its killed worker\n", node);
        return 1;
      } catch (const synk::Error& e) {
        std::printf("node %d: caught: %s\n", node, e.what());
        std::fflush(stdout);
      }
      if (scenario == "heal_missing" && node == 1) {
        // Does not heal: node 0's heal() must give up on its own, before
        // this node ends (whose end would make mpirun end the job).
        std::this_thread::sleep_for(std::chrono::seconds(8));
        std::printf("node %d: did not heal\n", node);
        return 1;
      }
      rt.heal();
      std::printf("node %d: healed\n", node);
      for (int i = 0; i < 3; ++i) step({X});
      rt.close();
      std::printf("node %d: closed\n", node);
      std::fflush(stdout);
      return 0;
    } else if (scenario == "kill_node") {
      if (node == 1) {
        fault_at();
        ::kill(::getpid(), SIGKILL);
      }
      for (int i = 0; i < 100; ++i) step({X});
    } else if (scenario == "mismatch") {
      if (node == 0) fault_at();
      if (node == 0) f({X});
      else h({X});
    } else if (scenario == "mismatch_caught") {
      // Each node makes a different call and the program handles the
      // error: prints it, closes the runtime and ends normally.
      if (node == 0) fault_at();
      try {
        if (node == 0) f({X});
        else h({X});
        std::printf("node %d: the diverging call was not refused\n", node);
        return 1;
      } catch (const synk::ArgumentError& e) {
        std::printf("node %d: caught: %s\n", node, e.what());
      }
      // The next call is refused: the runtime failed for good.
      try {
        step({X});
        std::printf("node %d: a call after the refused one worked\n", node);
        return 1;
      } catch (const synk::Error& e) {
        std::printf("node %d: next call: %s\n", node, e.what());
      }
      rt.close();
      std::printf("node %d: closed\n", node);
      std::fflush(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "unknown scenario '%s'\n", scenario.c_str());
      return 2;
    }
    for (int i = 0; i < 3; ++i) step({X});
    rt.close();
    std::printf("node %d: finished without an error\n", node);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "node %d: %s\n", node, e.what());
    return 1;
  }
}
