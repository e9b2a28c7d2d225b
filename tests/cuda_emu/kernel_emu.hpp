// tests/cuda_emu/kernel_emu.hpp — CUDA device code on the CPU: forced first
// into every .cu file that the SYNK_CUDA_EMU build compiles as C++ with g++
// (-include, see CMakeLists.txt here), so kernels/*.cu and
// src/cuda/device.cu build unchanged against the real <cuda_runtime.h>.
//
// What it provides, and why each is as it is:
// - __global__/__device__/__host__ vanish: without __CUDACC__ the CUDA
//   headers already define them to nothing (crt/host_defines.h). __shared__
//   would vanish too and make shared memory per thread, so it is defined
//   here first (the header keeps a definition it finds) as `static
//   thread_local`: one copy per OS thread. That is per block because the
//   launcher (launch.cpp) runs the blocks of a launch one after another on
//   the thread that runs the launch, every thread of a block as a fiber on
//   that same OS thread, and the emulated runtime runs each stream's work on
//   its own thread: two launches at once are two OS threads, two copies.
//   Like a GPU's, a block's shared memory starts with whatever was there.
// - threadIdx/blockIdx/blockDim/gridDim: the emulated thread's, set by the
//   launcher before it runs or resumes a thread.
// - __syncthreads(): the block's barrier (launch.cpp): the only place where
//   the threads of a block switch; every phase between two barriers runs
//   the threads in a seeded random order (SYNK_EMU_SEED) so that a missing
//   barrier shows as a wrong result. A barrier that some threads reach after
//   others exited, or threads waiting at two different __syncthreads()
//   sites, fails the launch naming the kernel.
// - The intrinsics synk's kernels use, exact: the _rn arithmetic is IEEE
//   single precision on the CPU too (with -ffp-contract=off no multiply-add
//   is fused unless asked for); bit casts are memcpy. Atomics work on
//   std::atomic_ref, so two launches on two streams touching one word stay
//   correct.
// - Math functions (expf, logf, tanhf, powf, ...) are the host libm's: glibc
//   rounds them more accurately than the device's (e.g. expf is 2 ulp on the
//   GPU), so results may differ from a GPU's in the last bits; tests compare
//   with atol + rtol*|ref| for that reason.
// - SYNK_LAUNCH (kernels/launch.cuh) expands to synk_emu::kernel::Launch
//   here: the launch goes onto the stream in stream order
//   (synk_emu::enqueue), checked as CUDA checks a launch configuration.
//
// Not emulated (a kernel using them does not compile here): dynamic shared
// memory (extern __shared__), warp intrinsics (__shfl*, __ballot, ...),
// __syncthreads_count/and/or, cooperative groups, textures.
#pragma once

#if defined(__CUDACC__)
#error "kernel_emu.hpp is for compiling .cu files with a C++ compiler (SYNK_CUDA_EMU), not for nvcc"
#endif

// Before <cuda_runtime.h>: host_defines.h keeps definitions it finds.
// initial-exec: libsynk is linked, not dlopen()ed, and a kernel reads its
// shared memory in its inner loops.
#undef __shared__
#define __shared__ static thread_local __attribute__((tls_model("initial-exec")))

#include <cuda_runtime.h>
#include <math.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>

#define SYNK_CUDA_EMU_KERNELS 1

namespace synk_emu::kernel {

// The built-in variables of the emulated thread that runs on this OS
// thread. initial-exec TLS: libsynk_cuda_emu is linked, never dlopen()ed,
// and the grid-stride loops read blockDim/gridDim every iteration.
struct Builtins {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
// constinit: no dynamic initialisation, so no TLS wrapper call per access.
extern constinit thread_local Builtins builtins __attribute__((tls_model("initial-exec")));

// The barrier of the calling thread's block; file:line name the site.
void syncthreads(const char* file, int line);

// The seed of the threads' order (SYNK_EMU_SEED, else a fixed default);
// every launch failure prints it.
uint64_t order_seed();

// What one launch needs from its kernel: the name for errors, whether the
// kernel has been seen at a barrier (then its blocks start as fibers, with
// the first phase in random order too), and how to run one thread.
struct KernelDesc {
  const char* name;
  std::atomic<bool> uses_barrier{false};
};
using ThreadFn = void (*)(const void* args);

// Checks the configuration as CUDA does (an error is returned and becomes
// the last error, nothing runs) and enqueues the grid on `stream`. `args`
// holds the kernel's parameters, `ptrs` the pointer parameters among them
// (checked against the emulated device memory when the launch runs).
cudaError_t launch(KernelDesc& kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   std::shared_ptr<const void> args, ThreadFn thread, const void* const* ptrs, int nptrs);

template <auto F>
constexpr const char* kernel_name() {
  // "... [with auto F = synk::kernels::{anonymous}::reduce_kernel<...>]"
  return __PRETTY_FUNCTION__;
}

// One per kernel, constant-initialised (no start-up order to mind).
template <auto F>
constinit inline KernelDesc kernel_desc{kernel_name<F>()};

template <class... P>
std::tuple<std::remove_cvref_t<P>...> params_of(void (*)(P...));

// SYNK_LAUNCH(kernel, grid, block, smem, stream)(args...): converts the
// arguments to the kernel's parameter types as a call does, and launches.
template <auto F>
class Launch {
  using Params = decltype(params_of(F));

 public:
  Launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream)
      : grid_(grid), block_(block), smem_(smem), stream_(stream) {}

  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == std::tuple_size_v<Params>, "kernel launched with the wrong number of arguments");
    auto args = std::make_shared<const Params>(std::forward<A>(a)...);
    const void* ptrs[std::tuple_size_v<Params> + 1] = {};
    int n = 0;
    std::apply(
        [&](const auto&... p) {
          ((void)(std::is_pointer_v<std::remove_cvref_t<decltype(p)>> ? (ptrs[n++] = pointer(p), 0) : 0), ...);
        },
        *args);
    (void)launch(kernel_desc<F>, grid_, block_, smem_, stream_, std::move(args), &run_thread, ptrs, n);
  }

 private:
  template <class T>
  static const void* pointer(const T& p) {
    if constexpr (std::is_pointer_v<T>) return static_cast<const void*>(p);
    else return nullptr;
  }
  // One thread: the kernel on a copy of its parameters, as each GPU thread
  // gets its own.
  static void run_thread(const void* args) { std::apply(F, *static_cast<const Params*>(args)); }

  dim3 grid_, block_;
  size_t smem_;
  cudaStream_t stream_;
};

}  // namespace synk_emu::kernel

#define threadIdx (::synk_emu::kernel::builtins.thread_idx)
#define blockIdx (::synk_emu::kernel::builtins.block_idx)
#define blockDim (::synk_emu::kernel::builtins.block_dim)
#define gridDim (::synk_emu::kernel::builtins.grid_dim)
#define __syncthreads() ::synk_emu::kernel::syncthreads(__FILE__, __LINE__)

// ---- intrinsics: exact ---------------------------------------------------------------
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, sizeof f); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, sizeof x); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, sizeof f); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, sizeof x); return x; }
inline double __longlong_as_double(long long x) { double d; std::memcpy(&d, &x, sizeof d); return d; }
inline long long __double_as_longlong(double d) { long long x; std::memcpy(&x, &d, sizeof x); return x; }

// Round-to-nearest single-precision arithmetic, never contracted (the
// volatile-free form is enough: -ffp-contract=off and SSE arithmetic).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }

// ---- atomics: CUDA's overloads, on std::atomic_ref; each returns the old value ----
namespace synk_emu::kernel {
template <class T, class Op>
T atomic_update(T* p, Op op) {
  std::atomic_ref<T> r(*p);
  T old = r.load(std::memory_order_relaxed);
  while (!r.compare_exchange_weak(old, op(old), std::memory_order_relaxed)) {
  }
  return old;
}
}  // namespace synk_emu::kernel

#define SYNK_EMU_ATOMIC_INT(T)                                                                          \
  inline T atomicAdd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_add(v, std::memory_order_relaxed); } \
  inline T atomicSub(T* p, T v) { return std::atomic_ref<T>(*p).fetch_sub(v, std::memory_order_relaxed); } \
  inline T atomicExch(T* p, T v) { return std::atomic_ref<T>(*p).exchange(v, std::memory_order_relaxed); } \
  inline T atomicAnd(T* p, T v) { return std::atomic_ref<T>(*p).fetch_and(v, std::memory_order_relaxed); } \
  inline T atomicOr(T* p, T v) { return std::atomic_ref<T>(*p).fetch_or(v, std::memory_order_relaxed); }   \
  inline T atomicXor(T* p, T v) { return std::atomic_ref<T>(*p).fetch_xor(v, std::memory_order_relaxed); } \
  inline T atomicMin(T* p, T v) {                                                                       \
    return ::synk_emu::kernel::atomic_update(p, [v](T o) { return v < o ? v : o; });                   \
  }                                                                                                     \
  inline T atomicMax(T* p, T v) {                                                                       \
    return ::synk_emu::kernel::atomic_update(p, [v](T o) { return v > o ? v : o; });                   \
  }                                                                                                     \
  inline T atomicCAS(T* p, T cmp, T v) {                                                                \
    std::atomic_ref<T>(*p).compare_exchange_strong(cmp, v, std::memory_order_relaxed);                 \
    return cmp;                                                                                         \
  }
SYNK_EMU_ATOMIC_INT(int)
SYNK_EMU_ATOMIC_INT(unsigned int)
SYNK_EMU_ATOMIC_INT(unsigned long long)
#undef SYNK_EMU_ATOMIC_INT
// long long: CUDA has atomicMin/Max (sm_35+) but no atomicAdd for it.
inline long long atomicMin(long long* p, long long v) {
  return synk_emu::kernel::atomic_update(p, [v](long long o) { return v < o ? v : o; });
}
inline long long atomicMax(long long* p, long long v) {
  return synk_emu::kernel::atomic_update(p, [v](long long o) { return v > o ? v : o; });
}
inline float atomicAdd(float* p, float v) {
  return synk_emu::kernel::atomic_update(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
  return synk_emu::kernel::atomic_update(p, [v](double o) { return o + v; });
}
inline float atomicExch(float* p, float v) { return std::atomic_ref<float>(*p).exchange(v, std::memory_order_relaxed); }

// Blocks of a launch run one at a time and other launches are other OS
// threads: a sequentially consistent fence orders this thread's writes as
// __threadfence orders them for the device.
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
