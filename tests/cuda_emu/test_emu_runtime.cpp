// tests/cuda_emu/test_emu_runtime.cpp — the emulated CUDA runtime and
// cuBLAS behave as synk relies on a GPU to behave, and as strictly as the
// emulation promises (tests/cuda_emu/runtime.cpp, cublas.cpp): stream order,
// results visible only after synchronisation, events across streams,
// capture and replay, the last error, devices per thread, the fork rule,
// host registration, and cuBLAS against a naive reference.
//
// Tests named EmuFresh* need a process where CUDA is not initialised yet:
// they skip unless SYNK_EMU_FRESH=1, and the test that wants one runs this
// binary again with that variable and a filter naming it.
#include "emu.hpp"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

extern char** environ;

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call)) << #call
#define BLAS_OK(call) ASSERT_EQ(CUBLAS_STATUS_SUCCESS, (call)) << #call

using namespace std::chrono_literals;

// Work that holds its stream until opened.
struct Gate {
  std::shared_ptr<std::atomic<bool>> open = std::make_shared<std::atomic<bool>>(false);
  void hold(cudaStream_t s) {
    auto o = open;
    ASSERT_EQ(cudaSuccess, synk_emu::enqueue(
                               s,
                               [o] {
                                 while (!o->load()) o->wait(false);
                               },
                               "gate"));
  }
  void release() {
    open->store(true);
    open->notify_all();
  }
};

// Device memory freed at scope exit.
struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t bytes) { EXPECT_EQ(cudaSuccess, cudaMalloc(&p, bytes)); }
  ~DevBuf() { cudaFree(p); }
  float* f() const { return static_cast<float*>(p); }
  int* i() const { return static_cast<int*>(p); }
};

struct StreamH {
  cudaStream_t s = nullptr;
  explicit StreamH(unsigned flags = cudaStreamNonBlocking) { EXPECT_EQ(cudaSuccess, cudaStreamCreateWithFlags(&s, flags)); }
  ~StreamH() {
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
    cudaGetLastError();
  }
};

// Runs this binary again, only `test`, with SYNK_EMU_FRESH=1; its exit status.
int run_fresh(const std::string& test) {
  std::string filter = "--gtest_filter=" + test;
  char self[] = "/proc/self/exe";
  char* argv[] = {self, filter.data(), nullptr};
  std::vector<char*> env;
  std::string fresh = "SYNK_EMU_FRESH=1";
  for (char** e = environ; *e; ++e) env.push_back(*e);
  env.push_back(fresh.data());
  env.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, self, nullptr, nullptr, argv, env.data()) != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool fresh_process() {
  const char* f = std::getenv("SYNK_EMU_FRESH");
  return f && std::strcmp(f, "1") == 0;
}

// ---- memory ---------------------------------------------------------------------------

TEST(EmuMemory, FreshAllocationIsNaNAndTracked) {
  DevBuf d(256);
  std::vector<float> h(64, 1.f);
  CUDA_OK(cudaMemcpy(h.data(), d.p, 256, cudaMemcpyDeviceToHost));
  for (float v : h) EXPECT_TRUE(std::isnan(v));

  cudaPointerAttributes a{};
  CUDA_OK(cudaPointerGetAttributes(&a, d.f() + 10));
  EXPECT_EQ(a.type, cudaMemoryTypeDevice);
  EXPECT_EQ(a.device, 0);
  CUDA_OK(cudaPointerGetAttributes(&a, h.data()));
  EXPECT_EQ(a.type, cudaMemoryTypeUnregistered);

  EXPECT_TRUE(synk_emu::device_accessible(d.p, 256));
  EXPECT_FALSE(synk_emu::device_accessible(d.p, 257));
  EXPECT_FALSE(synk_emu::device_accessible(h.data(), 4));

  EXPECT_EQ(cudaErrorInvalidValue, cudaFree(d.f() + 1));
  EXPECT_EQ(cudaErrorInvalidValue, cudaFree(h.data()));
  void* q = nullptr;
  CUDA_OK(cudaMalloc(&q, 16));
  CUDA_OK(cudaFree(q));
  EXPECT_EQ(cudaErrorInvalidValue, cudaFree(q));  // twice
  EXPECT_EQ(cudaErrorInvalidValue, cudaGetLastError());
}

TEST(EmuMemory, CopiesCheckTheirKindAndBounds) {
  DevBuf d(64);
  std::vector<char> h(128);
  // Past the allocation's end, and directions the pointers contradict.
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(d.p, h.data(), 65, cudaMemcpyHostToDevice));
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(h.data(), d.p, 64, cudaMemcpyHostToDevice));
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(d.p, h.data(), 64, cudaMemcpyDeviceToHost));
  EXPECT_EQ(cudaErrorInvalidValue, cudaMemsetAsync(h.data(), 0, 8, nullptr));
  EXPECT_EQ(cudaErrorInvalidPitchValue, cudaMemset2DAsync(d.p, 8, 0, 16, 2, nullptr));
  cudaGetLastError();
}

// ---- streams --------------------------------------------------------------------------

TEST(EmuStream, RunsItsQueueInOrder) {
  StreamH s;
  DevBuf d(101 * sizeof(int));
  std::vector<int> src(100);
  for (int i = 0; i < 100; ++i) {
    src[i] = i * 3;
    // The slot 0 is rewritten each time: only in order does slot i+1 get i*3.
    CUDA_OK(cudaMemcpyAsync(d.i(), &src[i], sizeof(int), cudaMemcpyHostToDevice, s.s));
    CUDA_OK(cudaMemcpyAsync(d.i() + i + 1, d.i(), sizeof(int), cudaMemcpyDeviceToDevice, s.s));
  }
  auto order = std::make_shared<std::vector<int>>();
  for (int i = 0; i < 200; ++i) CUDA_OK(synk_emu::enqueue(s.s, [order, i] { order->push_back(i); }, "push"));
  std::vector<int> out(101);
  CUDA_OK(cudaMemcpyAsync(out.data(), d.p, out.size() * sizeof(int), cudaMemcpyDeviceToHost, s.s));
  CUDA_OK(cudaStreamSynchronize(s.s));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(out[i + 1], i * 3) << i;
  ASSERT_EQ(order->size(), 200u);
  for (int i = 0; i < 200; ++i) EXPECT_EQ((*order)[i], i);
}

TEST(EmuStream, DeviceToHostIsVisibleOnlyAfterSynchronisation) {
  StreamH s;
  DevBuf d(sizeof(int));
  CUDA_OK(cudaMemsetAsync(d.p, 7, sizeof(int), s.s));
  int host = 1;
  CUDA_OK(cudaMemcpyAsync(&host, d.p, sizeof(int), cudaMemcpyDeviceToHost, s.s));
  std::this_thread::sleep_for(30ms);  // the copy has run by now, yet...
  EXPECT_EQ(host, 1) << "a device-to-host result reached the host before any synchronisation";
  CUDA_OK(cudaStreamSynchronize(s.s));
  EXPECT_EQ(host, 0x07070707);

  // An event's synchronisation publishes what precedes its record.
  cudaEvent_t e;
  CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  CUDA_OK(cudaMemsetAsync(d.p, 9, sizeof(int), s.s));
  CUDA_OK(cudaMemcpyAsync(&host, d.p, sizeof(int), cudaMemcpyDeviceToHost, s.s));
  CUDA_OK(cudaEventRecord(e, s.s));
  std::this_thread::sleep_for(10ms);
  EXPECT_EQ(host, 0x07070707);
  CUDA_OK(cudaEventSynchronize(e));
  EXPECT_EQ(host, 0x09090909);
  CUDA_OK(cudaEventDestroy(e));
}

TEST(EmuStream, HostToDeviceReadsItsSourceWhenTheStreamGetsThere) {
  StreamH s;
  DevBuf d(sizeof(int));
  Gate g;
  g.hold(s.s);
  int src = 5;
  CUDA_OK(cudaMemcpyAsync(d.p, &src, sizeof(int), cudaMemcpyHostToDevice, s.s));
  src = 9;  // a GPU may read it this late too (pinned memory, or a busy stream)
  g.release();
  int out = 0;
  CUDA_OK(cudaMemcpyAsync(&out, d.p, sizeof(int), cudaMemcpyDeviceToHost, s.s));
  CUDA_OK(cudaStreamSynchronize(s.s));
  EXPECT_EQ(out, 9);
}

TEST(EmuStream, LegacyStreamOrdersBlockingStreamsOnly) {
  Gate g;
  g.hold(nullptr);  // the legacy default stream is busy

  // cudaMemcpy from pageable memory: staged at once, the copy itself waits.
  DevBuf d(sizeof(int));
  int src = 11;
  CUDA_OK(cudaMemcpy(d.p, &src, sizeof(int), cudaMemcpyHostToDevice));
  src = 12;

  // A non-blocking stream does not wait for the legacy stream...
  StreamH nb;
  auto ran = std::make_shared<std::atomic<bool>>(false);
  CUDA_OK(synk_emu::enqueue(nb.s, [ran] { ran->store(true); }, "flag"));
  CUDA_OK(cudaStreamSynchronize(nb.s));
  EXPECT_TRUE(ran->load());

  // ...a blocking one does.
  StreamH b(cudaStreamDefault);
  CUDA_OK(synk_emu::enqueue(b.s, [] {}, "nothing"));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(cudaErrorNotReady, cudaStreamQuery(b.s));
  g.release();
  CUDA_OK(cudaStreamSynchronize(b.s));
  int out = 0;
  CUDA_OK(cudaMemcpy(&out, d.p, sizeof(int), cudaMemcpyDeviceToHost));
  EXPECT_EQ(out, 11);
}

// ---- events ---------------------------------------------------------------------------

TEST(EmuEvent, QueryRecordSynchronizeElapsed) {
  StreamH s;
  cudaEvent_t a, b, untimed;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  CUDA_OK(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming));
  EXPECT_EQ(cudaSuccess, cudaEventQuery(b));  // never recorded
  float ms = -1;
  EXPECT_EQ(cudaErrorInvalidResourceHandle, cudaEventElapsedTime(&ms, a, b));
  cudaGetLastError();

  Gate g;
  CUDA_OK(cudaEventRecord(a, s.s));
  g.hold(s.s);
  CUDA_OK(cudaEventRecord(b, s.s));
  CUDA_OK(cudaEventRecord(untimed, s.s));
  EXPECT_EQ(cudaErrorNotReady, cudaEventQuery(b));
  EXPECT_EQ(cudaErrorNotReady, cudaEventElapsedTime(&ms, a, b));
  cudaGetLastError();
  EXPECT_EQ(cudaSuccess, cudaPeekAtLastError()) << "cudaErrorNotReady from a query is no error";
  std::this_thread::sleep_for(30ms);
  g.release();
  CUDA_OK(cudaEventSynchronize(b));
  CUDA_OK(cudaEventQuery(b));
  CUDA_OK(cudaEventElapsedTime(&ms, a, b));
  EXPECT_GE(ms, 25.f);
  EXPECT_LT(ms, 5000.f);
  EXPECT_EQ(cudaErrorInvalidResourceHandle, cudaEventElapsedTime(&ms, a, untimed));
  cudaGetLastError();
  for (cudaEvent_t e : {a, b, untimed}) CUDA_OK(cudaEventDestroy(e));
  EXPECT_EQ(cudaErrorInvalidResourceHandle, cudaEventQuery(a));
  cudaGetLastError();
}

TEST(EmuEvent, StreamWaitEventOrdersTwoStreams) {
  StreamH a, b;
  DevBuf x(sizeof(int)), y(sizeof(int));
  CUDA_OK(cudaMemsetAsync(x.p, 0, sizeof(int), a.s));
  CUDA_OK(cudaMemsetAsync(y.p, 0, sizeof(int), a.s));
  CUDA_OK(cudaStreamSynchronize(a.s));
  cudaEvent_t e;
  CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  Gate g;
  g.hold(a.s);
  CUDA_OK(cudaMemsetAsync(x.p, 1, sizeof(int), a.s));
  CUDA_OK(cudaEventRecord(e, a.s));
  CUDA_OK(cudaStreamWaitEvent(b.s, e, 0));
  CUDA_OK(cudaMemcpyAsync(y.p, x.p, sizeof(int), cudaMemcpyDeviceToDevice, b.s));
  // Re-recording the event later does not change what b waits for.
  CUDA_OK(cudaEventRecord(e, b.s));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(cudaErrorNotReady, cudaStreamQuery(b.s)) << "b ran ahead of the event it waits for";
  g.release();
  CUDA_OK(cudaStreamSynchronize(b.s));
  int out = 0;
  CUDA_OK(cudaMemcpy(&out, y.p, sizeof(int), cudaMemcpyDeviceToHost));
  EXPECT_EQ(out, 0x01010101);
  CUDA_OK(cudaEventDestroy(e));
}

TEST(EmuEvent, StreamsWithoutAWaitRunIndependently) {
  StreamH a, b;
  Gate g;
  g.hold(a.s);
  CUDA_OK(synk_emu::enqueue(b.s, [] {}, "nothing"));
  CUDA_OK(cudaStreamSynchronize(b.s));  // does not hang on a's gate
  EXPECT_EQ(cudaErrorNotReady, cudaStreamQuery(a.s));
  g.release();
  CUDA_OK(cudaStreamSynchronize(a.s));
}

// ---- capture and graphs ---------------------------------------------------------------

TEST(EmuCapture, RecordsInsteadOfRunningAndReplaysInOrder) {
  StreamH s;
  DevBuf x(sizeof(int)), y(sizeof(int));
  CUDA_OK(cudaMemsetAsync(x.p, 0, sizeof(int), s.s));
  CUDA_OK(cudaMemsetAsync(y.p, 0, sizeof(int), s.s));
  CUDA_OK(cudaStreamSynchronize(s.s));

  auto order = std::make_shared<std::vector<int>>();
  CUDA_OK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeThreadLocal));
  cudaStreamCaptureStatus st;
  CUDA_OK(cudaStreamIsCapturing(s.s, &st));
  EXPECT_EQ(st, cudaStreamCaptureStatusActive);
  for (int i = 0; i < 3; ++i) CUDA_OK(synk_emu::enqueue(s.s, [order, i] { order->push_back(i); }, "push"));
  CUDA_OK(cudaMemsetAsync(x.p, 3, sizeof(int), s.s));
  CUDA_OK(cudaMemcpyAsync(y.p, x.p, sizeof(int), cudaMemcpyDeviceToDevice, s.s));
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(s.s, &graph));
  ASSERT_NE(graph, nullptr);
  CUDA_OK(cudaStreamSynchronize(s.s));
  int out = -1;
  CUDA_OK(cudaMemcpy(&out, y.p, sizeof(int), cudaMemcpyDeviceToHost));
  EXPECT_EQ(out, 0) << "captured work ran";
  EXPECT_TRUE(order->empty()) << "captured work ran";

  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0ULL));
  CUDA_OK(cudaGraphDestroy(graph));  // the instance keeps its own copy
  for (int r = 0; r < 2; ++r) CUDA_OK(cudaGraphLaunch(exec, s.s));
  CUDA_OK(cudaStreamSynchronize(s.s));
  EXPECT_EQ(*order, (std::vector<int>{0, 1, 2, 0, 1, 2}));
  CUDA_OK(cudaMemcpy(&out, y.p, sizeof(int), cudaMemcpyDeviceToHost));
  EXPECT_EQ(out, 0x03030303);
  CUDA_OK(cudaGraphExecDestroy(exec));
  EXPECT_EQ(cudaErrorInvalidValue, cudaGraphExecDestroy(exec));
  cudaGetLastError();
}

// What synk must not do while it captures: each call fails with CUDA's
// error and the capture ends invalidated; the stream works afterwards.
TEST(EmuCapture, UnsafeCallsFailAndInvalidateTheCapture) {
  StreamH s;
  DevBuf d(sizeof(int));
  int host = 0;
  struct Case {
    const char* what;
    std::function<cudaError_t()> call;
  };
  void* p = nullptr;
  const std::vector<Case> cases = {
      {"cudaStreamSynchronize", [&] { return cudaStreamSynchronize(s.s); }},
      {"cudaMalloc", [&] { return cudaMalloc(&p, 16); }},
      {"cudaFree", [&] { return cudaFree(d.p); }},
      {"cudaMemcpy", [&] { return cudaMemcpy(&host, d.p, sizeof(int), cudaMemcpyDeviceToHost); }},
      {"cudaDeviceSynchronize", [&] { return cudaDeviceSynchronize(); }},
      {"cudaStreamQuery", [&] { return cudaStreamQuery(s.s); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    CUDA_OK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeThreadLocal));
    EXPECT_EQ(cudaErrorStreamCaptureUnsupported, c.call());
    EXPECT_EQ(cudaErrorStreamCaptureInvalidated, cudaMemsetAsync(d.p, 0, sizeof(int), s.s));
    cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&host);
    EXPECT_EQ(cudaErrorStreamCaptureInvalidated, cudaStreamEndCapture(s.s, &graph));
    EXPECT_EQ(graph, nullptr);
    cudaGetLastError();
    // Not capturing any more: the stream runs work again.
    CUDA_OK(cudaMemsetAsync(d.p, 0, sizeof(int), s.s));
    CUDA_OK(cudaStreamSynchronize(s.s));
  }
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(cudaErrorIllegalState, cudaStreamEndCapture(s.s, reinterpret_cast<cudaGraph_t*>(&p)));
  EXPECT_EQ(cudaErrorStreamCaptureUnsupported, cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeThreadLocal));
  cudaGetLastError();
}

TEST(EmuCapture, ThreadLocalModeLetsOtherThreadsAllocate) {
  StreamH s;
  CUDA_OK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeThreadLocal));
  cudaError_t other = cudaErrorUnknown;
  std::thread([&] {
    void* p = nullptr;
    other = cudaMalloc(&p, 16);
    cudaFree(p);
  }).join();
  EXPECT_EQ(other, cudaSuccess);
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(s.s, &graph));
  CUDA_OK(cudaGraphDestroy(graph));

  // In global mode another thread's cudaMalloc breaks the capture.
  CUDA_OK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeGlobal));
  std::thread([&] {
    void* p = nullptr;
    other = cudaMalloc(&p, 16);
  }).join();
  EXPECT_EQ(other, cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaErrorStreamCaptureInvalidated, cudaStreamEndCapture(s.s, &graph));
  cudaGetLastError();
}

TEST(EmuCapture, OtherStreamsJoinThroughEventsAndCapturedEventsRefuseQueries) {
  StreamH s, t;
  auto order = std::make_shared<std::vector<int>>();
  auto push = [&](cudaStream_t st, int v) {
    ASSERT_EQ(cudaSuccess, synk_emu::enqueue(st, [order, v] { order->push_back(v); }, "push"));
  };
  cudaEvent_t fork_e, join_e;
  CUDA_OK(cudaEventCreateWithFlags(&fork_e, cudaEventDisableTiming));
  CUDA_OK(cudaEventCreateWithFlags(&join_e, cudaEventDisableTiming));
  CUDA_OK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeThreadLocal));
  push(s.s, 1);
  CUDA_OK(cudaEventRecord(fork_e, s.s));
  EXPECT_EQ(cudaErrorCapturedEvent, cudaEventQuery(fork_e));
  EXPECT_EQ(cudaErrorCapturedEvent, cudaEventSynchronize(fork_e));
  CUDA_OK(cudaStreamWaitEvent(t.s, fork_e, 0));  // t joins the capture
  push(t.s, 2);
  CUDA_OK(cudaEventRecord(join_e, t.s));
  CUDA_OK(cudaStreamWaitEvent(s.s, join_e, 0));
  push(s.s, 3);
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(s.s, &graph));
  CUDA_OK(cudaStreamSynchronize(t.s));
  EXPECT_TRUE(order->empty()) << "work of a joined stream ran during the capture";
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0ULL));
  CUDA_OK(cudaGraphLaunch(exec, s.s));
  CUDA_OK(cudaStreamSynchronize(s.s));
  EXPECT_EQ(*order, (std::vector<int>{1, 2, 3}));
  // t left the capture with s: its work runs again.
  push(t.s, 4);
  CUDA_OK(cudaStreamSynchronize(t.s));
  EXPECT_EQ(order->back(), 4);
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaEventDestroy(fork_e));
  CUDA_OK(cudaEventDestroy(join_e));
  cudaGetLastError();
}

// ---- errors and devices ---------------------------------------------------------------

TEST(EmuErrors, LastErrorIsPerThreadAndGetClearsIt) {
  cudaGetLastError();
  EXPECT_EQ(cudaErrorInvalidDevice, cudaSetDevice(99));
  EXPECT_EQ(cudaErrorInvalidDevice, cudaPeekAtLastError());
  EXPECT_EQ(cudaErrorInvalidDevice, cudaPeekAtLastError());
  cudaError_t other = cudaErrorUnknown;
  std::thread([&] { other = cudaGetLastError(); }).join();
  EXPECT_EQ(other, cudaSuccess);
  int n = 0;
  CUDA_OK(cudaGetDeviceCount(&n));  // a successful call leaves the error alone
  EXPECT_EQ(cudaErrorInvalidDevice, cudaGetLastError());
  EXPECT_EQ(cudaSuccess, cudaGetLastError());

  EXPECT_STREQ(cudaGetErrorName(cudaErrorInvalidValue), "cudaErrorInvalidValue");
  EXPECT_STREQ(cudaGetErrorString(cudaErrorInvalidValue), "invalid argument");
  EXPECT_STREQ(cudaGetErrorName(cudaErrorStreamCaptureInvalidated), "cudaErrorStreamCaptureInvalidated");
  EXPECT_STREQ(cudaGetErrorName(cudaSuccess), "cudaSuccess");
  EXPECT_STREQ(cudaGetErrorName(static_cast<cudaError_t>(12345)), "unrecognized error code");
}

TEST(EmuDevices, CurrentDeviceIsPerThread) {
  int n = 0;
  CUDA_OK(cudaGetDeviceCount(&n));
  const char* env = std::getenv("SYNK_EMU_DEVICES");
  EXPECT_EQ(n, env ? std::atoi(env) : 2);
  ASSERT_GE(n, 2);

  cudaDeviceProp p;
  CUDA_OK(cudaGetDeviceProperties(&p, 1));
  EXPECT_STREQ(p.name, "synk emulated GPU");
  EXPECT_EQ(p.major, 9);
  EXPECT_EQ(p.minor, 0);
  EXPECT_GT(p.totalGlobalMem, size_t{1} << 30);
  EXPECT_EQ(cudaErrorInvalidDevice, cudaGetDeviceProperties(&p, n));
  cudaGetLastError();
  int v = 0;
  CUDA_OK(cudaRuntimeGetVersion(&v));
  EXPECT_EQ(v, 13000);
  CUDA_OK(cudaDriverGetVersion(&v));
  EXPECT_GE(v, 13000);

  int mine = -1;
  CUDA_OK(cudaGetDevice(&mine));
  EXPECT_EQ(mine, 0);
  int theirs = -1, stream_dev = -1, alloc_dev = -1;
  std::thread([&] {
    ASSERT_EQ(cudaSuccess, cudaSetDevice(1));
    ASSERT_EQ(cudaSuccess, cudaGetDevice(&theirs));
    cudaStream_t s;
    ASSERT_EQ(cudaSuccess, cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    stream_dev = synk_emu::stream_device(s);
    void* q = nullptr;
    ASSERT_EQ(cudaSuccess, cudaMalloc(&q, 8));
    cudaPointerAttributes a{};
    ASSERT_EQ(cudaSuccess, cudaPointerGetAttributes(&a, q));
    alloc_dev = a.device;
    cudaFree(q);
    cudaStreamDestroy(s);
  }).join();
  EXPECT_EQ(theirs, 1);
  EXPECT_EQ(stream_dev, 1);
  EXPECT_EQ(alloc_dev, 1);
  CUDA_OK(cudaGetDevice(&mine));
  EXPECT_EQ(mine, 0);
  EXPECT_EQ(synk_emu::current_device(), 0);
  EXPECT_EQ(synk_emu::stream_device(nullptr), 0);
}

TEST(EmuHost, RegistrationMakesHostMemoryDeviceAccessible) {
  std::vector<char> h(4096);
  EXPECT_FALSE(synk_emu::device_accessible(h.data(), 16));
  CUDA_OK(cudaHostRegister(h.data(), h.size(), cudaHostRegisterDefault));
  EXPECT_TRUE(synk_emu::device_accessible(h.data() + 100, 16));
  EXPECT_EQ(cudaErrorHostMemoryAlreadyRegistered, cudaHostRegister(h.data(), h.size(), cudaHostRegisterDefault));
  EXPECT_EQ(cudaErrorHostMemoryAlreadyRegistered, cudaHostRegister(h.data() + 8, 64, cudaHostRegisterDefault));
  cudaPointerAttributes a{};
  CUDA_OK(cudaPointerGetAttributes(&a, h.data() + 8));
  EXPECT_EQ(a.type, cudaMemoryTypeHost);
  EXPECT_EQ(cudaErrorHostMemoryNotRegistered, cudaHostUnregister(h.data() + 8));
  CUDA_OK(cudaHostUnregister(h.data()));
  EXPECT_EQ(cudaErrorHostMemoryNotRegistered, cudaHostUnregister(h.data()));
  EXPECT_FALSE(synk_emu::device_accessible(h.data(), 16));
  EXPECT_EQ(cudaErrorInvalidValue, cudaHostRegister(nullptr, 16, cudaHostRegisterDefault));
  cudaGetLastError();
}

// ---- the fork rule --------------------------------------------------------------------

// The child's verdict in its exit status: 0 when every check held.
int child_checks(bool expect_usable) {
  int n = -1;
  const cudaError_t count = cudaGetDeviceCount(&n);
  void* p = nullptr;
  const cudaError_t alloc = cudaMalloc(&p, 16);
  const cudaError_t last = cudaGetLastError();
  cublasHandle_t h = nullptr;
  const cublasStatus_t blas = cublasCreate(&h);
  if (expect_usable) return count == cudaSuccess && n > 0 && alloc == cudaSuccess && blas == CUBLAS_STATUS_SUCCESS ? 0 : 1;
  int bad = 0;
  if (count != cudaErrorInitializationError) bad |= 1;
  if (alloc != cudaErrorInitializationError) bad |= 2;
  if (blas != CUBLAS_STATUS_NOT_INITIALIZED) bad |= 4;
  if (last != cudaErrorInitializationError) bad |= 8;
  if (std::strcmp(cudaGetErrorName(cudaErrorInitializationError), "cudaErrorInitializationError") != 0) bad |= 16;
  return bad;
}

int fork_and_check(bool expect_usable) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) _exit(child_checks(expect_usable));
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(EmuFork, ChildOfAnInitialisedProcessGetsInitializationError) {
  int n = 0;
  CUDA_OK(cudaGetDeviceCount(&n));
  EXPECT_EQ(fork_and_check(false), 0);
  // The parent is unaffected.
  void* p = nullptr;
  CUDA_OK(cudaMalloc(&p, 16));
  CUDA_OK(cudaFree(p));
}

TEST(EmuFork, ChildOfAFreshProcessCanUseCuda) { EXPECT_EQ(run_fresh("EmuFresh.ForkBeforeAndAfterInit"), 0); }

TEST(EmuFresh, ForkBeforeAndAfterInit) {
  if (!fresh_process()) GTEST_SKIP() << "runs in a fresh process (EmuFork.ChildOfAFreshProcessCanUseCuda)";
  EXPECT_EQ(fork_and_check(true), 0) << "a child of a process that never called CUDA must be able to";
  int n = 0;
  CUDA_OK(cudaGetDeviceCount(&n));
  EXPECT_EQ(fork_and_check(false), 0);
}

// A failed operation (a kernel fault) poisons its device, as on a GPU.
TEST(EmuFork, FailedWorkIsStickyOnItsDevice) { EXPECT_EQ(run_fresh("EmuFresh.FailedWorkIsSticky"), 0); }

TEST(EmuFresh, FailedWorkIsSticky) {
  if (!fresh_process()) GTEST_SKIP() << "runs in a fresh process (EmuFork.FailedWorkIsStickyOnItsDevice)";
  StreamH s;
  CUDA_OK(synk_emu::enqueue(s.s, [] { throw std::runtime_error("emulated fault"); }, "faulting kernel"));
  EXPECT_EQ(cudaErrorLaunchFailure, cudaStreamSynchronize(s.s));
  EXPECT_EQ(cudaErrorLaunchFailure, synk_emu::enqueue(s.s, [] {}, "after"));
  EXPECT_EQ(cudaErrorLaunchFailure, cudaGetLastError());
  // Another device is unaffected.
  CUDA_OK(cudaSetDevice(1));
  void* p = nullptr;
  CUDA_OK(cudaMalloc(&p, 16));
  CUDA_OK(cudaFree(p));
}

// ---- cuBLAS ---------------------------------------------------------------------------

// Column-major reference: C = alpha op(A) op(B) + beta C (beta 0: C not read).
void ref_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const std::vector<float>& a, int lda,
              const std::vector<float>& b, int ldb, float beta, std::vector<float>& c, int ldc) {
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double acc = 0;
      for (int l = 0; l < k; ++l) {
        const float av = ta ? a[l + static_cast<size_t>(i) * lda] : a[i + static_cast<size_t>(l) * lda];
        const float bv = tb ? b[j + static_cast<size_t>(l) * ldb] : b[l + static_cast<size_t>(j) * ldb];
        acc += static_cast<double>(av) * bv;
      }
      float& cij = c[i + static_cast<size_t>(j) * ldc];
      cij = static_cast<float>(alpha * acc + (beta == 0.f ? 0.0 : static_cast<double>(beta) * cij));
    }
}

std::vector<float> random_vec(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// cudaMemcpy from pageable memory may return before the copy landed, and
// the tests' non-blocking streams do not wait for the legacy stream it
// uses: synchronise before they read.
float* to_device(const std::vector<float>& h) {
  void* p = nullptr;
  EXPECT_EQ(cudaSuccess, cudaMalloc(&p, h.size() * sizeof(float)));
  EXPECT_EQ(cudaSuccess, cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(nullptr));
  return static_cast<float*>(p);
}

std::vector<float> to_host(const float* d, size_t n, cudaStream_t s) {
  std::vector<float> h(n);
  EXPECT_EQ(cudaSuccess, cudaMemcpyAsync(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
  EXPECT_EQ(cudaSuccess, cudaStreamSynchronize(s));
  return h;
}

struct Blas {
  cublasHandle_t h = nullptr;
  StreamH stream;
  Blas() {
    EXPECT_EQ(CUBLAS_STATUS_SUCCESS, cublasCreate(&h));
    EXPECT_EQ(CUBLAS_STATUS_SUCCESS, cublasSetStream(h, stream.s));
  }
  ~Blas() { cublasDestroy(h); }
};

void expect_near(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << i;
      continue;
    }
    EXPECT_NEAR(got[i], want[i], 1e-4f * (1 + std::fabs(want[i]))) << "element " << i;
  }
}

class EmuCublasGemm : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(EmuCublasGemm, MatchesReferenceWithOddLeadingDimensions) {
  const auto [ta, tb] = GetParam();
  const int m = 5, n = 3, k = 7;
  const int ra = ta ? k : m, ca = ta ? m : k, rb = tb ? n : k, cb = tb ? k : n;
  const int lda = ra + 2, ldb = rb + 3, ldc = m + 1;
  const auto a = random_vec(static_cast<size_t>(lda) * ca, 1), b = random_vec(static_cast<size_t>(ldb) * cb, 2);
  Blas blas;
  float* da = to_device(a);
  float* db = to_device(b);
  for (float beta : {0.f, 0.5f}) {
    SCOPED_TRACE(beta);
    // beta = 0: C starts as NaN (fresh memory) and must not leak into the result.
    std::vector<float> c = beta == 0.f ? std::vector<float>(static_cast<size_t>(ldc) * n, NAN)
                                       : random_vec(static_cast<size_t>(ldc) * n, 3);
    float* dc = to_device(c);
    const float alpha = 1.5f;
    BLAS_OK(cublasSgemm(blas.h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, da,
                        lda, db, ldb, &beta, dc, ldc));
    auto want = c;
    ref_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, want, ldc);
    // Rows m..ldc-1 of C are padding: untouched.
    expect_near(to_host(dc, c.size(), blas.stream.s), want);
    cudaFree(dc);
  }
  cudaFree(da);
  cudaFree(db);
}

TEST_P(EmuCublasGemm, StridedBatchedMatchesReference) {
  const auto [ta, tb] = GetParam();
  const int m = 4, n = 6, k = 3, count = 3;
  const int ra = ta ? k : m, ca = ta ? m : k, rb = tb ? n : k, cb = tb ? k : n;
  const int lda = ra + 1, ldb = rb, ldc = m + 2;
  const long long sa = static_cast<long long>(lda) * ca + 5, sb = static_cast<long long>(ldb) * cb,
                  sc = static_cast<long long>(ldc) * n + 1;
  const auto a = random_vec(sa * count, 4), b = random_vec(sb * count, 5);
  auto c = random_vec(sc * count, 6);
  Blas blas;
  float* da = to_device(a);
  float* db = to_device(b);
  float* dc = to_device(c);
  const float alpha = -0.75f, beta = 0.f;
  BLAS_OK(cublasSgemmStridedBatched(blas.h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                                    &alpha, da, lda, sa, db, ldb, sb, &beta, dc, ldc, sc, count));
  auto want = c;
  for (int i = 0; i < count; ++i) {
    std::vector<float> ai(a.begin() + i * sa, a.begin() + (i + 1) * sa), bi(b.begin() + i * sb, b.begin() + (i + 1) * sb),
        ci(want.begin() + i * sc, want.begin() + (i + 1) * sc);
    ref_gemm(ta, tb, m, n, k, alpha, ai, lda, bi, ldb, beta, ci, ldc);
    std::copy(ci.begin(), ci.end(), want.begin() + i * sc);
  }
  expect_near(to_host(dc, c.size(), blas.stream.s), want);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
}

INSTANTIATE_TEST_SUITE_P(Transposes, EmuCublasGemm, ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(EmuCublas, SgemvMatchesReference) {
  const int m = 5, n = 4, lda = 7;
  const auto a = random_vec(static_cast<size_t>(lda) * n, 7);
  Blas blas;
  float* da = to_device(a);
  for (bool trans : {false, true}) {
    for (int incx : {1, 2, -1}) {
      SCOPED_TRACE(testing::Message() << "trans " << trans << " incx " << incx);
      const int lx = trans ? m : n, ly = trans ? n : m, incy = 3;
      const auto x = random_vec(static_cast<size_t>(lx) * std::abs(incx), 8);
      auto y = random_vec(static_cast<size_t>(ly) * incy, 9);
      float* dx = to_device(x);
      float* dy = to_device(y);
      const float alpha = 2.f, beta = 0.25f;
      BLAS_OK(cublasSgemv(blas.h, trans ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, &alpha, da, lda, dx, incx, &beta, dy, incy));
      auto want = y;
      for (int i = 0; i < ly; ++i) {
        double acc = 0;
        for (int j = 0; j < lx; ++j) {
          const float aij = trans ? a[j + static_cast<size_t>(i) * lda] : a[i + static_cast<size_t>(j) * lda];
          const float xj = incx > 0 ? x[static_cast<size_t>(j) * incx] : x[static_cast<size_t>(lx - 1 - j) * -incx];
          acc += static_cast<double>(aij) * xj;
        }
        want[static_cast<size_t>(i) * incy] = static_cast<float>(alpha * acc + beta * y[static_cast<size_t>(i) * incy]);
      }
      expect_near(to_host(dy, y.size(), blas.stream.s), want);
      cudaFree(dx);
      cudaFree(dy);
    }
  }
  cudaFree(da);
}

TEST(EmuCublas, BadLeadingDimensionsAreInvalidValues) {
  Blas blas;
  DevBuf a(4096), b(4096), c(4096);
  const float one = 1.f, zero = 0.f;
  const auto N = CUBLAS_OP_N, T = CUBLAS_OP_T;
  // m = 4, n = 3, k = 5: A is 4x5 (N) or 5x4 stored (T), B 5x3 (N) or 3x5 (T), C 4x3.
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(blas.h, N, N, 4, 3, 5, &one, a.f(), 3, b.f(), 5, &zero, c.f(), 4));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(blas.h, T, N, 4, 3, 5, &one, a.f(), 4, b.f(), 5, &zero, c.f(), 4));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(blas.h, N, N, 4, 3, 5, &one, a.f(), 4, b.f(), 4, &zero, c.f(), 4));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(blas.h, N, T, 4, 3, 5, &one, a.f(), 4, b.f(), 2, &zero, c.f(), 4));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(blas.h, N, N, 4, 3, 5, &one, a.f(), 4, b.f(), 5, &zero, c.f(), 3));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(blas.h, N, N, -1, 3, 5, &one, a.f(), 4, b.f(), 5, &zero, c.f(), 4));
  BLAS_OK(cublasSgemm(blas.h, N, N, 4, 3, 5, &one, a.f(), 4, b.f(), 5, &zero, c.f(), 4));
  BLAS_OK(cublasSgemm(blas.h, T, T, 4, 3, 5, &one, a.f(), 5, b.f(), 3, &zero, c.f(), 4));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE,
            cublasSgemmStridedBatched(blas.h, N, N, 4, 3, 5, &one, a.f(), 3, 20, b.f(), 5, 15, &zero, c.f(), 4, 12, 2));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE,
            cublasSgemmStridedBatched(blas.h, N, N, 4, 3, 5, &one, a.f(), 4, 20, b.f(), 5, 15, &zero, c.f(), 3, 12, 2));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemv(blas.h, N, 4, 3, &one, a.f(), 3, b.f(), 1, &zero, c.f(), 1));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemv(blas.h, T, 4, 3, &one, a.f(), 4, b.f(), 0, &zero, c.f(), 1));
  // Operands outside device memory would fault on a GPU.
  std::vector<float> host(64);
  EXPECT_EQ(CUBLAS_STATUS_EXECUTION_FAILED,
            cublasSgemm(blas.h, N, N, 4, 3, 5, &one, host.data(), 4, b.f(), 5, &zero, c.f(), 4));
  EXPECT_EQ(CUBLAS_STATUS_EXECUTION_FAILED,
            cublasSgemm(blas.h, N, N, 4, 3, 5, &one, a.f(), 4, b.f(), 5, &zero, c.f(), 1100));  // C past its end
  CUDA_OK(cudaStreamSynchronize(blas.stream.s));
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
  EXPECT_STRNE(cublasGetStatusString(CUBLAS_STATUS_INVALID_VALUE), "");
}

TEST(EmuCublas, HandleSettingsAndCapture) {
  Blas blas;
  DevBuf ws(1 << 20);
  BLAS_OK(cublasSetWorkspace(blas.h, ws.p, 1 << 20));
  EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSetWorkspace(blas.h, static_cast<char*>(ws.p) + 4, 1024));
  BLAS_OK(cublasSetMathMode(blas.h, CUBLAS_TF32_TENSOR_OP_MATH));
  BLAS_OK(cublasSetPointerMode(blas.h, CUBLAS_POINTER_MODE_HOST));

  // A captured GEMM runs at each replay, not at capture.
  const std::vector<float> a = {1, 2, 3, 4}, b = {1, 0, 0, 1};  // 2x2, B = I
  float* da = to_device(a);
  float* db = to_device(b);
  DevBuf c(4 * sizeof(float));
  CUDA_OK(cudaMemsetAsync(c.p, 0, 4 * sizeof(float), blas.stream.s));
  CUDA_OK(cudaStreamSynchronize(blas.stream.s));
  const float one = 1.f;
  CUDA_OK(cudaStreamBeginCapture(blas.stream.s, cudaStreamCaptureModeThreadLocal));
  BLAS_OK(cublasSgemm(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, da, 2, db, 2, &one, c.f(), 2));
  cudaGraph_t graph = nullptr;
  CUDA_OK(cudaStreamEndCapture(blas.stream.s, &graph));
  EXPECT_EQ(to_host(c.f(), 4, blas.stream.s), (std::vector<float>{0, 0, 0, 0}));
  cudaGraphExec_t exec = nullptr;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0ULL));
  CUDA_OK(cudaGraphLaunch(exec, blas.stream.s));
  CUDA_OK(cudaGraphLaunch(exec, blas.stream.s));
  EXPECT_EQ(to_host(c.f(), 4, blas.stream.s), (std::vector<float>{2, 4, 6, 8}));
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaFree(da);
  cudaFree(db);
}

}  // namespace
