// tests/cuda_emu/launch.cpp — kernel launches of the CUDA emulation: the
// grid of a SYNK_LAUNCH runs on the CPU, in stream order, on the thread
// that runs the stream's work (synk_emu::enqueue).
//
// Blocks run one after another; the threads of a block are fibers
// (Boost.Context) that switch only at __syncthreads(). Each phase between
// two barriers runs the block's live threads in a random order drawn from
// SYNK_EMU_SEED, the launch and the block, so a kernel that reads what
// another thread writes without a barrier between them gets stale data in
// some order and a wrong result, reproducibly for one seed.
//
// Speed: most kernels never reach a barrier, and a fiber per thread would
// cost them a stack and two switches per thread. So a kernel starts in
// direct mode: one fiber runs every thread of every block in turn, as plain
// calls. If thread 0 of a block reaches a barrier, that fiber becomes
// thread 0 of the block, the block's other threads become fibers of their
// own, and the kernel is marked as one with barriers: its later blocks and
// launches start as fibers (the first phase in random order too). If a
// later thread of a block reaches a barrier in direct mode, the earlier
// ones have already exited without reaching it: that is the error below.
//
// Errors (the launch fails as a faulting kernel does: message on stderr,
// Fault(cudaErrorLaunchFailure) to the runtime, which makes it sticky):
// threads waiting at a barrier that others of the block have exited
// without; threads waiting at two different __syncthreads() sites; a
// pointer parameter outside the emulated device memory
// (cudaErrorIllegalAddress).
#include <sys/mman.h>

#include <boost/context/fiber.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "emu.hpp"
#include "kernel_emu.hpp"

namespace synk_emu::kernel {

constinit thread_local Builtins builtins __attribute__((tls_model("initial-exec"))) = {};

namespace ctx = boost::context;

namespace {

constexpr uint64_t kDefaultSeed = 0x5eed;

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Fiber stacks, reused per OS thread (a block's fibers all live on the
// thread that runs the launch). A guard page below each turns an overflow
// into a fault instead of silent corruption; pages are committed on touch.
class StackPool {
 public:
  static constexpr size_t kSize = 256 * 1024, kGuard = 4096;
  ~StackPool() {
    for (void* p : free_) ::munmap(p, kSize);
  }
  ctx::stack_context allocate() {
    void* base;
    if (!free_.empty()) {
      base = free_.back();
      free_.pop_back();
    } else {
      base = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (base == MAP_FAILED) throw std::bad_alloc();
      ::mprotect(base, kGuard, PROT_NONE);
      // Room to take every stack back without allocating in deallocate().
      free_.reserve(++mapped_);
    }
    // Stack tops 256 KiB apart would all fall into one cache set, and a
    // barrier phase touches every fiber's top: colour them apart.
    const uintptr_t k = reinterpret_cast<uintptr_t>(base) / kSize;
    const size_t colour = (k % 64) * 64 + ((k / 64) % 4) * 4096;
    ctx::stack_context sc;
    sc.size = kSize - colour;  // deallocate() finds the base as sp - size
    sc.sp = static_cast<char*>(base) + kSize - colour;
    return sc;
  }
  void deallocate(ctx::stack_context& sc) noexcept {
    free_.push_back(static_cast<char*>(sc.sp) - sc.size);  // capacity reserved
  }

 private:
  std::vector<void*> free_;
  size_t mapped_ = 0;
};

thread_local StackPool stacks;

struct PooledStack {
  ctx::stack_context allocate() { return stacks.allocate(); }
  void deallocate(ctx::stack_context& sc) noexcept { stacks.deallocate(sc); }
};

enum class State : uint8_t { Ready, AtBarrier, Exited };

// One emulated thread as a fiber.
struct Thread {
  ctx::fiber fiber;  // resumes it; empty while it runs and once it exited
  ctx::fiber back;   // inside it: the scheduler, to switch to at a barrier
  uint32_t linear = 0;
  uint3 idx{};  // threadIdx of `linear`
  State state = State::Ready;
  const char* file = nullptr;
  int line = 0;
};

// One launch being run on this OS thread.
struct Grid {
  KernelDesc* kernel;
  ThreadFn fn;
  const void* args;
  dim3 grid, block;
  uint32_t nthreads;
  uint64_t nblocks;
  uint64_t serial;       // launches run on this OS thread so far: varies the order
  bool direct = false;   // direct mode: `runner` runs the threads in turn
  uint64_t cur_block = 0;  // the block running now
  Thread runner;         // direct mode's fiber; thread 0 of the block that switched
  Thread* current = nullptr;
  std::string error;     // the first error; the launch fails with it
  std::vector<Thread> pool;      // fiber mode's threads, by index, for every block
  std::vector<Thread*> threads;  // this block's threads
  std::vector<uint32_t> order;   // this phase's order
  bool quit = false;             // the pool's fibers return when next resumed

  ~Grid() {
    // Let the waiting fibers of a finished launch return normally (a fiber
    // destroyed while suspended unwinds by an exception: slow, and only
    // needed after an error, when some wait at a barrier).
    quit = true;
    if (error.empty())
      for (Thread& t : pool)
        if (t.fiber) t.fiber = std::move(t.fiber).resume();
  }
};

// initial-exec, as `builtins`: syncthreads() reads it at every barrier.
thread_local Grid* running __attribute__((tls_model("initial-exec"))) = nullptr;
thread_local uint64_t launches_here __attribute__((tls_model("initial-exec"))) = 0;

std::string dims(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string dims(const dim3& d) { return dims(uint3{d.x, d.y, d.z}); }

uint3 thread_of(const Grid& g, uint32_t t) {
  if (g.block.y == 1 && g.block.z == 1) return {t, 0, 0};  // no divisions in the common case
  return {t % g.block.x, (t / g.block.x) % g.block.y, t / (g.block.x * g.block.y)};
}

void enter_block(Grid& g, uint64_t b) {
  g.cur_block = b;
  const uint64_t gx = g.grid.x, gy = g.grid.y;
  builtins.block_idx = {static_cast<unsigned>(b % gx), static_cast<unsigned>((b / gx) % gy),
                        static_cast<unsigned>(b / (gx * gy))};
}

void fail(Grid& g, std::string what) {
  if (g.error.empty()) g.error = std::move(what);
}

// Runs one thread's kernel body inside a fiber; an exception that is not
// the fiber's own unwinding becomes the launch's error.
void run_body(Grid& g) {
  try {
    g.fn(g.args);
  } catch (const ctx::detail::forced_unwind&) {
    throw;
  } catch (const std::exception& e) {
    fail(g, std::string("thread threw: ") + e.what());
  } catch (...) {
    fail(g, "thread threw a non-standard exception");
  }
}

void resume(Grid& g, Thread& t) {
  builtins.thread_idx = t.idx;
  g.current = &t;
  t.fiber = std::move(t.fiber).resume();
  g.current = nullptr;
}

// A fiber per thread index serves every block of the launch in fiber mode:
// after its thread exits it waits for the next block (or for `quit`), so
// fibers are made once per launch, not once per block.
Thread* fiber_thread(Grid& g, uint32_t t) {
  Thread* me = &g.pool[t];
  if (!me->fiber) {
    Grid* gp = &g;
    me->fiber = ctx::fiber(std::allocator_arg, PooledStack{}, [gp, me](ctx::fiber&& sched) {
      me->back = std::move(sched);
      while (!gp->quit) {
        run_body(*gp);
        me->state = State::Exited;
        me->back = std::move(me->back).resume();
      }
      return std::move(me->back);
    });
  }
  me->state = State::Ready;
  return me;
}

std::string site(const Thread& t) { return std::string(t.file) + ":" + std::to_string(t.line); }

// Runs block `b` with every thread a fiber; `first`, when given, is thread
// 0 already waiting at its first barrier (the direct-mode switch).
void run_block_as_fibers(Grid& g, uint64_t b, Thread* first) {
  enter_block(g, b);
  const uint32_t n = g.nthreads;
  if (g.pool.empty()) g.pool = std::vector<Thread>(n);
  auto& th = g.threads;
  th.resize(n);
  for (uint32_t t = 0; t < n; ++t) {
    th[t] = (t == 0 && first) ? first : fiber_thread(g, t);
    if (th[t]->linear != t || t == 0) {
      th[t]->linear = t;
      th[t]->idx = thread_of(g, t);
    }
  }
  uint64_t rng = mix(mix(mix(order_seed()) ^ g.serial) ^ b);
  // This phase's threads: all of them, less thread 0 when it already waits.
  auto& order = g.order;
  order.clear();
  for (uint32_t t = first ? 1 : 0; t < n; ++t) order.push_back(t);
  uint32_t nexit = 0;
  const Thread* exited = nullptr;
  const Thread* waiting = first;  // the first thread seen at this phase's barrier
  uint32_t nwait = first ? 1 : 0;
  for (;;) {
    for (size_t i = order.size(); i > 1; --i) {  // Fisher-Yates, multiply-shift instead of a division
      rng = mix(rng);
      std::swap(order[i - 1], order[static_cast<size_t>((static_cast<unsigned __int128>(rng) * i) >> 64)]);
    }
    for (uint32_t t : order) {
      Thread& x = *th[t];
      resume(g, x);
      if (!g.error.empty()) return;  // the fibers unwind with the Grid
      if (x.state == State::Exited) {
        ++nexit;
        if (!exited) exited = &x;
      } else {
        if (waiting && (x.line != waiting->line || (x.file != waiting->file && std::strcmp(x.file, waiting->file)))) {
          fail(g, "threads of block " + dims(builtins.block_idx) + " wait at two different __syncthreads(): " +
                      site(*waiting) + " (thread " + dims(thread_of(g, waiting->linear)) + ") and " + site(x) +
                      " (thread " + dims(thread_of(g, x.linear)) + ")");
          return;
        }
        if (!waiting) waiting = &x;
        ++nwait;
      }
    }
    if (nwait == 0) return;  // every thread exited: the block is done
    if (nexit > 0) {
      fail(g, std::to_string(nwait) + " thread(s) of block " + dims(builtins.block_idx) + " (e.g. thread " +
                  dims(thread_of(g, waiting->linear)) + ") wait at __syncthreads() at " + site(*waiting) + " that " +
                  std::to_string(nexit) + " thread(s) (e.g. thread " + dims(thread_of(g, exited->linear)) +
                  ") exited without reaching");
      return;
    }
    // Every thread waits at one barrier: release them, in a new order.
    order.clear();
    for (uint32_t t = 0; t < n; ++t) {
      th[t]->state = State::Ready;
      order.push_back(t);
    }
    nwait = 0;
    waiting = nullptr;
  }
}

// The whole grid, on this OS thread. Returns the error, empty on success.
std::string run_grid(Grid& g) {
  uint64_t b = 0;
  if (!g.kernel->uses_barrier.load(std::memory_order_relaxed)) {
    // Direct mode: every thread of every block in turn, inside one fiber so
    // that thread 0 can still stop at a barrier.
    g.direct = true;
    Grid* gp = &g;
    ctx::fiber runner(std::allocator_arg, PooledStack{}, [gp](ctx::fiber&& sched) {
      Grid& g = *gp;
      Thread& me = g.runner;
      me.back = std::move(sched);
      g.current = &me;
      for (uint64_t b = 0; b < g.nblocks; ++b) {
        enter_block(g, b);
        for (uint32_t t = 0; t < g.nthreads; ++t) {
          me.linear = t;
          builtins.thread_idx = thread_of(g, t);
          run_body(g);
          if (!g.direct || !g.error.empty()) {  // thread 0 of a block that switched to fibers, done
            me.state = State::Exited;
            return std::move(me.back);
          }
        }
      }
      me.state = State::Exited;
      return std::move(me.back);
    });
    runner = std::move(runner).resume();
    if (!g.error.empty()) return g.error;  // `runner` unwinds on return
    if (!runner) return {};               // no barrier anywhere
    // Thread 0 of block g.cur_block waits at its first barrier.
    g.kernel->uses_barrier.store(true, std::memory_order_relaxed);
    g.direct = false;
    g.runner.fiber = std::move(runner);
    b = g.cur_block;
    run_block_as_fibers(g, b, &g.runner);
    if (!g.error.empty()) return g.error;
    ++b;
  }
  for (; b < g.nblocks; ++b) {
    run_block_as_fibers(g, b, nullptr);
    if (!g.error.empty()) return g.error;
  }
  return {};
}

// "... [with auto F = ns::kernel<...>]" -> "ns::kernel<...>"
std::string kernel_short_name(const char* pretty) {
  std::string s = pretty;
  const size_t at = s.find("F = ");
  if (at == std::string::npos) return s;
  s = s.substr(at + 4);
  if (!s.empty() && s.back() == ']') s.pop_back();
  if (s.rfind("& ", 0) == 0) s = s.substr(2);
  return s;
}

}  // namespace

uint64_t order_seed() {
  static const uint64_t seed = [] {
    const char* e = std::getenv("SYNK_EMU_SEED");
    return e && *e ? std::strtoull(e, nullptr, 0) : kDefaultSeed;
  }();
  return seed;
}

void syncthreads(const char* file, int line) {
  Grid* g = running;
  if (!g || !g->current) {
    std::fprintf(stderr, "synk_emu: __syncthreads() at %s:%d outside a kernel launch\n", file, line);
    std::abort();
  }
  Thread* me = g->current;
  if (g->direct) {
    if (me->linear != 0)
      fail(*g, "thread " + dims(builtins.thread_idx) + " of block " + dims(builtins.block_idx) +
                   " reaches __syncthreads() at " + file + ":" + std::to_string(line) + " that threads (0,0,0).." +
                   dims(thread_of(*g, me->linear - 1)) + " exited without reaching");
    g->direct = false;  // the scheduler takes this fiber as thread 0 (or drops it on error)
  }
  me->state = State::AtBarrier;
  me->file = file;
  me->line = line;
  // Other threads write shared memory before this thread goes on: nothing
  // read before the barrier may be kept in a register across it.
  asm volatile("" ::: "memory");
  me->back = std::move(me->back).resume();
  asm volatile("" ::: "memory");
}

cudaError_t launch(KernelDesc& kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   std::shared_ptr<const void> args, ThreadFn thread, const void* const* ptrs, int nptrs) {
  const std::string name = kernel_short_name(kernel.name);
  // CUDA's limits (compute capability 7.0 and later): the launch is
  // refused, the last error set, nothing sticky.
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  cudaError_t e = cudaSuccess;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || block.x > 1024 ||
      block.y > 1024 || block.z > 64 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    e = cudaErrorInvalidConfiguration;
  else if (smem != 0) {
    // extern __shared__ is not emulated; refuse rather than run a kernel
    // whose dynamic shared memory does not exist.
    std::fprintf(stderr, "synk_emu: launch of %s asks for %zu bytes of dynamic shared memory, which the "
                         "emulation does not provide\n", name.c_str(), smem);
    e = cudaErrorInvalidValue;
  }
  if (e != cudaSuccess) {
    set_last_error(e);
    return e;
  }
  std::vector<const void*> pointers(ptrs, ptrs + nptrs);
  auto work = [&kernel, grid, block, args = std::move(args), thread, pointers = std::move(pointers), name] {
    Grid g{.kernel = &kernel,
           .fn = thread,
           .args = args.get(),
           .grid = grid,
           .block = block,
           .nthreads = static_cast<uint32_t>(uint64_t{block.x} * block.y * block.z),
           .nblocks = uint64_t{grid.x} * grid.y * grid.z,
           .serial = launches_here++,
           .runner = {},
           .current = nullptr,
           .error = {},
           .pool = {},
           .threads = {},
           .order = {}};
    cudaError_t code = cudaErrorLaunchFailure;
    std::string error;
    for (size_t i = 0; i < pointers.size() && error.empty(); ++i)
      if (pointers[i] && !device_accessible(pointers[i], 1)) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%p", pointers[i]);
        error = "pointer parameter #" + std::to_string(i + 1) + " (" + buf + ") is not emulated device memory";
        code = cudaErrorIllegalAddress;
      }
    if (error.empty()) {
      const Builtins saved = builtins;
      Grid* const outer = running;
      running = &g;
      builtins.grid_dim = grid;
      builtins.block_dim = block;
      error = run_grid(g);
      running = outer;
      builtins = saved;
    }
    if (error.empty()) return;
    const std::string msg = "kernel " + name + " (grid " + dims(grid) + ", block " + dims(block) + "): " + error +
                            " [thread order seed SYNK_EMU_SEED=" + std::to_string(order_seed()) + "]";
    std::fprintf(stderr, "synk_emu: launch failed: %s\n", msg.c_str());
    throw Fault(code, msg);
  };
  return enqueue(stream, std::move(work), kernel.name);
}

}  // namespace synk_emu::kernel
