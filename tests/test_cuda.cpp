// test_cuda.cpp — the CUDA device layer (src/cuda/device.hpp). The
// kernels are tested through the executor (test_cuda_exec.cpp).
//
// Tests named Gpu* need a GPU: CMake labels them `gpu` and they skip, saying
// why, where there is none. The others check what works on any machine with
// the toolkit (error reporting, device discovery without a driver), so CI
// exercises the CUDA build on every run. Without CUDA all of them skip.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "synk/config.hpp"
#include "synk/error.hpp"

#if SYNK_HAVE_CUDA
#include "cuda/device.hpp"
#include "support/device_array.hpp"
#endif

namespace {

#if !SYNK_HAVE_CUDA
constexpr const char* kNoCuda =
    "synk was built without CUDA (SYNK_WITH_CUDA=OFF or no toolkit found)";
#endif

// Skips the current test unless a CUDA device is usable.
#define SYNK_REQUIRE_GPU()                                                   \
  do {                                                                       \
    if (!gpu_available())                                                    \
      GTEST_SKIP() << "no CUDA device (synk::cuda::device_count() == 0)";   \
  } while (0)

#if SYNK_HAVE_CUDA
bool gpu_available() { return synk::cuda::device_count() > 0; }

// Stands in for a CUDA runtime call that fails with cudaErrorInvalidValue
// (= 1), so error reporting is tested without needing a device.
int failing_cuda_call() { return 1; }
#endif

TEST(Cuda, CheckThrowsBackendErrorNamingCallFileAndDevice) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << kNoCuda;
#else
  try {
    SYNK_CUDA_CHECK(failing_cuda_call());
    FAIL() << "SYNK_CUDA_CHECK did not throw";
  } catch (const synk::BackendError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("failing_cuda_call()"), std::string::npos) << msg;
    EXPECT_NE(msg.find("test_cuda.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("device"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cudaErrorInvalidValue"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(SYNK_CUDA_CHECK(0));  // cudaSuccess
#endif
}

TEST(Cuda, DeviceCountNeverThrows) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << kNoCuda;
#else
  int n = -1;
  EXPECT_NO_THROW(n = synk::cuda::device_count());
  EXPECT_GE(n, 0);
  // Asking twice gives the same answer (no sticky error state).
  EXPECT_EQ(synk::cuda::device_count(), n);
#endif
}

// Issue 16, item 3: what cudaGetDeviceCount answered is reported as such;
// an initialisation error never reads as "no device".
TEST(Cuda, ProbeSaysWhatTheRuntimeAnswered) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << kNoCuda;
#else
  using synk::cuda::DeviceProbe;
  EXPECT_EQ((DeviceProbe{.count = 2}).describe(), "2 CUDA device(s) visible");
  EXPECT_EQ((DeviceProbe{}).describe(), "no CUDA device is visible");
  const std::string no_dev = DeviceProbe{0, 100, "cudaErrorNoDevice", "no CUDA-capable device is detected"}.describe();
  EXPECT_NE(no_dev.find("no CUDA device is visible"), std::string::npos) << no_dev;
  EXPECT_NE(no_dev.find("cudaErrorNoDevice"), std::string::npos) << no_dev;
  const std::string init = DeviceProbe{0, 3, "cudaErrorInitializationError", "initialization error"}.describe();
  EXPECT_EQ(init.find("no CUDA device"), std::string::npos) << init;
  EXPECT_NE(init.find("CUDA initialisation failed: cudaErrorInitializationError"), std::string::npos) << init;
  const std::string other = DeviceProbe{0, 999, "cudaErrorUnknown", "unknown error"}.describe();
  EXPECT_NE(other.find("CUDA initialisation failed: cudaErrorUnknown"), std::string::npos) << other;
  const std::string child = DeviceProbe{0, -1, "probe", "fork: out of memory"}.describe();
  EXPECT_NE(child.find("probe failed: fork: out of memory"), std::string::npos) << child;

  // The child's answer is this machine's: a count with no error, or an
  // error (with its name) and a count of 0.
  const DeviceProbe p = synk::cuda::probe_devices_in_child();
  if (p.error != 0) {
    EXPECT_EQ(p.count, 0);
    EXPECT_FALSE(p.name.empty());
    EXPECT_NE(p.describe().find(p.name), std::string::npos) << p.describe();
  }
  EXPECT_GE(p.count, 0);
  EXPECT_EQ(synk::cuda::device_count(), p.count) << "asked here and in a child: " << p.describe();
#endif
}

TEST(GpuDeviceArray, UploadRejectsSizeMismatch) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << kNoCuda;
#else
  SYNK_REQUIRE_GPU();
  synk::cuda::DeviceArray<float> y(4);
  std::vector<float> wrong(5);
  EXPECT_THROW(y.upload(wrong), synk::ArgumentError);
#endif
}

TEST(GpuDeviceBuffer, MoveTransfersOwnership) {
#if !SYNK_HAVE_CUDA
  GTEST_SKIP() << kNoCuda;
#else
  SYNK_REQUIRE_GPU();
  synk::cuda::DeviceBuffer a(64);
  void* p = a.data();
  ASSERT_NE(p, nullptr);
  synk::cuda::DeviceBuffer b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.bytes(), 64u);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  synk::cuda::DeviceBuffer c(16);
  c = std::move(b);              // c's old memory is freed, b's is taken
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(b.data(), nullptr);  // NOLINT(bugprone-use-after-move)
#endif
}

}  // namespace
