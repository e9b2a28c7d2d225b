// test_cuda_ranks.cpp — what CUDA ranks are made of, on the CPU: the paths
// that initialise CUDA in the calling process record it first, so that a
// later fork() refuses CUDA ranks saying why (no GPU needed: the record
// comes before the CUDA call, which fails here).
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "runtime/core.hpp"
#include "synk/synk.hpp"
#if SYNK_HAVE_CUDA
#include "common/gpu_info.hpp"
#endif

using namespace synk;

namespace {

// ---- CUDA initialised in this process is recorded before the CUDA call -------------------

int in_child(int (*scenario)()) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = scenario();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "scenario threw: %s\n", e.what());
      code = 98;
    }
    ::_exit(code);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// After the CUDA work `touch` did (successful or not), fork() refuses CUDA
// ranks saying why: this process has no fork server from before it.
int refused_after(void (*touch)()) {
  if (detail::cuda_context_noted()) return 10;
  try {
    touch();
  } catch (const Error&) {
    // No GPU here: the CUDA call fails, after the record.
  }
  if (!detail::cuda_context_noted()) return 11;
  detail::test_hooks().fake_gpu_count = 2;
  try {
    Runtime rt = synk::fork({.workers = 2, .device = "cuda", .comm = CommBackend::host_staged});
    rt.close();
    return 12;
  } catch (const ArgumentError& e) {
    if (std::string(e.what()).find("already initialised CUDA") == std::string::npos) return 13;
  }
  return 0;
}

#define SKIP_IF_CUDA_NOTED()                                                                          \
  do {                                                                                               \
    if (detail::cuda_context_noted())                                                                \
      GTEST_SKIP() << "an earlier test in this process initialised CUDA; run this test alone (ctest does)"; \
  } while (0)

TEST(CudaContextRecord, UseRankDeviceRecordsBeforeCudaSetDevice) {
  if (!SYNK_HAVE_CUDA) GTEST_SKIP() << "synk was built without CUDA";
  SKIP_IF_CUDA_NOTED();
  EXPECT_EQ(in_child([] { return refused_after([] { detail::use_rank_device(0, 0); }); }), 0)
      << "10: noted before; 11: not noted after use_rank_device; 12: fork accepted; 13: other message";
}

TEST(CudaContextRecord, BenchGpuInfoRecordsBeforeItsFirstCudaCall) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << "synk was built without CUDA";
#else
  SKIP_IF_CUDA_NOTED();
  EXPECT_EQ(in_child([] { return refused_after([] { (void)bench::gpu_info(0); }); }), 0)
      << "10: noted before; 11: not noted after gpu_info; 12: fork accepted; 13: other message";
#endif
}

}  // namespace
