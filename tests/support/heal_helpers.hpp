// tests/support/heal_helpers.hpp — what the heal tests share
// (tests/test_heal.cpp on one node, tests/mpi/heal.cpp across nodes):
// deaths made deterministic with marker files, and the small regression
// they train.
//
// A job, or the test hook a worker calls per command, kills its own
// process (SIGKILL) when the test's "arm" file exists and it is the first
// to create the "fired" file. The paths hold the master's pid, so that
// several "nodes" on one machine (each a master) have their own; they are
// set before fork(), since the workers and the fork server are copies of
// the master.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "proc_probe.hpp"
#include "runtime/core.hpp"  // detail::test_hooks, Cmd
#include "runtime/fork_server.hpp"
#include "synk/synk.hpp"

namespace synk_test {

inline char g_arm[128], g_fired[128];

// `prefix` names the test program, `test` the test.
inline void set_markers(const char* prefix, const char* test) {
  std::snprintf(g_arm, sizeof g_arm, "/tmp/%s-%d-%s.arm", prefix, static_cast<int>(::getpid()), test);
  std::snprintf(g_fired, sizeof g_fired, "/tmp/%s-%d-%s.fired", prefix, static_cast<int>(::getpid()), test);
  std::remove(g_arm);
  std::remove(g_fired);
}

inline void arm() {
  const int fd = ::open(g_arm, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
}

inline void clear_markers() {
  std::remove(g_arm);
  std::remove(g_fired);
}

// Whether a process fired since the markers were armed.
inline bool fired() {
  struct stat st{};
  return ::stat(g_fired, &st) == 0;
}

// True once per arming, in the first process that asks.
inline bool fire_once() {
  struct stat st{};
  if (::stat(g_arm, &st) != 0) return false;
  const int fd = ::open(g_fired, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

// The hook (detail::test_hooks().on_command, installed before fork()):
// local rank 1 dies at the first call (a function call or training step)
// after the test armed the markers.
inline void kill_in_call(int cmd, int rank, synk::detail::CommandHeader&) {
  if (rank == 1 && cmd == static_cast<int>(synk::detail::Cmd::call) && fire_once()) ::raise(SIGKILL);
}

// A job long enough that every rank takes some of a hundred: returns the
// rank that ran it.
inline int32_t slow_rank(synk::JobContext& ctx, const int&) {
  ::usleep(1000);
  return ctx.rank();
}

// No worker, fork server or segment left once the runtime is closed.
inline void expect_nothing_left() {
  EXPECT_TRUE(children(synk::detail::fork_server_pid()).empty());
  EXPECT_EQ(memfd_segments(), 0);
  EXPECT_TRUE(dev_shm_synk().empty());
}

// A dense layer trained with Nesterov momentum: two parameters and two
// velocities, so that a heal that lost the optimizer state shows.
struct Regression {
  synk::Graph g;
  synk::Tensor x, y, loss;
  synk::nn::Dense l;
  Regression() {
    x = g.input("x", synk::f32, {synk::batch, 4});
    y = g.input("y", synk::f32, {synk::batch, 1});
    l = synk::nn::dense(g, "l", 4, 1, synk::Init::uniform(-0.5f, 0.5f), synk::Init::zeros());
    loss = synk::mean(synk::square(l(x) - y));
  }
  synk::TrainSpec spec() {
    return {.name = "train", .inputs = {x, y}, .outputs = {{loss}}, .loss = loss, .params = l.params(),
            .optimizer = [](const std::vector<synk::Tensor>& p, const std::vector<synk::Tensor>& gr) {
              return synk::optim::nesterov(p, gr, {.lr = 0.02f, .momentum = 0.9f});
            }};
  }
};

// Batch i of a run: rows of its own, so that a skipped step shows (24
// rows: every rank of up to 24 gets some).
inline std::pair<synk::Array, synk::Array> batch_of(int i) {
  std::vector<float> xv(24 * 4), yv(24);
  for (size_t r = 0; r < 24; ++r) {
    float t = 0;
    for (size_t k = 0; k < 4; ++k) {
      xv[r * 4 + k] = std::sin(static_cast<float>(i * 97 + static_cast<int>(r * 4 + k)));
      t += xv[r * 4 + k] * static_cast<float>(k + 1) * 0.5f;
    }
    yv[r] = t;
  }
  return {synk::Array::from(xv, {24, 4}), synk::Array::from(yv, {24, 1})};
}

}  // namespace synk_test
