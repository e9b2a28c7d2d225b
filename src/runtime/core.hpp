// src/runtime/core.hpp — the control plane's private pieces shared by the
// master (runtime.cpp, call.cpp, data.cpp, collectives.cpp, jobs.cpp,
// nodes.cpp) and the worker loop (worker.cpp): the shared control block,
// the commands, the master's state. What a rank computes with is its Rank
// (src/rank/rank.hpp); the bytes of commands are framed in src/wire.
//
// Control plane: one memfd segment created before fork holds a ControlBlock.
// The master writes a command (CommandHeader; variable-size arguments go to
// the "args" segment) and bumps `seq`; workers spin on `seq` for a while,
// then sleep on it as a futex. Each worker finishes by storing `seq` into
// its slot's `done` word (waking the master if it sleeps there) with a
// status and, on failure, a message.
//
// Segments made after fork (Data, the args buffer, per-rank result buffers)
// reach the workers as memfds sent with SCM_RIGHTS over a socketpair per
// worker, made before fork. Messages are ordered and queued in the kernel
// before the command that uses them is published, so a worker drains its
// socket at the start of every command and then knows every id it can meet.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "comm/comm.hpp"
#include "comm/cpu_group.hpp"
#include "comm/node_link.hpp"
#include "comm/shm.hpp"
#include "rank/rank.hpp"
#include "synk/config.hpp"
#include "trace/trace.hpp"
#include "wire/wire.hpp"
#include "synk/data.hpp"
#include "synk/runtime.hpp"

namespace synk {

// A Data's handle state (data.hpp); its segment stays mapped while a handle lives.
struct Data::Impl {
  std::weak_ptr<detail::RuntimeCore> rt;
  detail::RuntimeCore* core = nullptr;
  uint64_t gen = 0;  // core->gen when made: core alone could be a new runtime at the old address
  uint64_t id = 0;
  comm::SharedSegment seg;
  DType dtype = DType::f32;
  Shape shape;
  ~Impl();
};

}  // namespace synk

namespace synk::detail {

constexpr int kMaxRanks = comm::CpuGroup::kMaxRanks;  // per node
constexpr int kMaxNodes = 1024;

// Where a node's ranks go among the CPUs of its machine: after the ranks of
// the nodes before it there (`first`), `ranks` on the machine in all (nodes
// of different sizes included); host_place() below.
struct HostPlace {
  int first = 0;
  int ranks = 0;
};

enum class Cmd : uint32_t { none = 0, stop, sync, distribute, call, collective, var_get, var_set, comm_init, jobs };
const char* cmd_name(Cmd c);

// Commands whose workers enter CpuGroup collectives: a worker that fails in
// them aborts the group so that no peer waits for it.
inline bool cmd_collective(Cmd c) { return c == Cmd::collective; }

struct alignas(128) WorkerSlot {
  uint32_t done;          // atomic futex word: last seq finished
  uint32_t master_waits;  // atomic: the master sleeps on `done`
  int32_t status;         // 0 ok, 1 error (message in msg)
  // atomic: segment messages the master has put on this worker's socket, so
  // a worker reads its socket only when something is there (no system call
  // per command otherwise).
  uint32_t seg_msgs;
  // What the rank is doing now (its open spans, trace.hpp), which the
  // master's stall watcher reads.
  trace::Activity doing;
  // atomic: 1 + the job this rank runs, in a job table that tracks its jobs
  // (a map with retries, async jobs: the job a dead rank held is named;
  // jobs.cpp).
  uint64_t job;
  char msg[896];
};
static_assert(sizeof(WorkerSlot) == 1024);

struct CommandHeader {
  uint32_t kind;
  uint32_t collective;  // 1: workers enter collectives (train step, variable collectives)
  uint64_t call_no;
  uint64_t args_id;
  uint64_t args_bytes;
  uint64_t result_id[kMaxRanks];
  uint64_t result_cap[kMaxRanks];
};

// The shared words of a job table (Cmd::jobs; runtime/jobs.cpp), all atomic.
struct JobSync {
  alignas(64) uint64_t published;  // jobs the master has written
  uint32_t pub_gen;                // futex word: bumped per publish, close and cancel
  uint32_t pub_sleepers;           // workers sleeping on pub_gen
  uint32_t closed;                 // 1: no more jobs will be published
  uint32_t cancel;                 // 1: take no more jobs (close())
  alignas(64) uint32_t crit;       // JobContext::critical: 0 free, 1 held, 2 held with waiters
  alignas(64) uint64_t ordered_next;  // JobContext::ordered: jobs below this have passed
  uint32_t ordered_gen;               // futex word: bumped per advance
  uint32_t ordered_waiters;
  alignas(64) uint64_t done_count;  // jobs finished (ring entries)
  uint32_t done_gen;                // futex word: bumped per finished job
  uint32_t master_sleeps;           // the master sleeps on done_gen
};

struct ControlBlock {
  alignas(128) uint32_t seq;  // atomic futex word: bumped per command
  uint32_t sleepers;          // atomic: workers sleeping on seq
  alignas(128) CommandHeader cmd;
  alignas(128) uint64_t map_next;  // atomic: next job of a job table (Cmd::jobs)
  alignas(128) JobSync jobs;        // Cmd::jobs (runtime/jobs.cpp)
  // Cmd::comm_init: the bytes every rank joins its comm with
  // (comm::make_bootstrap; NCCL's unique id), comm::bootstrap_bytes of them.
  alignas(128) unsigned char comm_boot[comm::kMaxBootstrapBytes];
  uint64_t trace_seg;                       // the timeline's segment id (0: no trace; trace/trace.hpp)
  uint64_t steps_seg;                       // the training steps' phase rings (trace::StepLogs)
  // Training steps of CPU ranks on one node: every rank's gradient buffer
  // in shared memory (segment ids by rank, their size, bumped per change),
  // all-reduced in place (CpuGroup::all_reduce_peers).
  alignas(128) uint64_t grads_gen;
  uint64_t grads_bytes;
  uint64_t grads_seg[kMaxRanks];
  // Multi-node (docs/multinode.md): this node and every node's rank count,
  // written by the master before it starts the workers.
  alignas(128) int32_t node, nodes;
  int32_t node_sizes[kMaxNodes];
  int32_t gpu_first;  // RuntimeCore::gpu_first
  alignas(128) WorkerSlot slots[kMaxRanks];
};

// "running", "stopped", "sleeping", ... of a live process (/proc), "gone".
std::string process_state(pid_t pid);

// Test-only fault injection (tests/test_faults.cpp, bench/stress). Set in the
// master before synk::fork(); the forked workers inherit the pointers. Never
// set by the library itself.
struct TestHooks {
  // A worker calls this after reading a command's header and before acting
  // on it (cmd: the Cmd as an integer). It may crash, hang, exit, throw (the
  // worker reports the exception like any other) or corrupt `hdr`, the
  // worker's private copy of the header, to check command validation.
  void (*on_command)(int cmd, int rank, CommandHeader& hdr) = nullptr;
  // A worker calls this in distribute() before compiling the functions.
  void (*before_compile)(int rank) = nullptr;
  // Training steps keep their gradients in the executor's scratch and
  // all-reduce them through the group's staging (the path without shared
  // gradient buffers), to compare the two.
  bool no_shared_grads = false;
  // >= 0: fork() takes this as the number of visible GPUs instead of
  // counting them, and skips its check that this process has not
  // initialised CUDA (tests of the rank count, whose ranks never use CUDA,
  // on machines without a GPU).
  int fake_gpu_count = -1;
};
TestHooks& test_hooks();



// Combines every rank's share by the outputs' collect modes. A
// deterministic call's ranks report one piece per chunk (stacked on a new
// first dim, except gathered outputs with a batch dim), combined here in
// chunk order, chunk_rows[c] rows each, so the result does not depend on
// the rank count; chunk_rows is empty otherwise.
std::vector<Array> combine(const std::vector<ResultView>& ranks, const std::vector<Collect>& collects,
                           const std::string& fn_name, std::span<const int64_t> chunk_rows = {});



// Cmd::jobs on a worker: takes jobs of the table in `args` until it is
// closed (or cancelled); `seg` maps a segment id (throws for an unknown one).
void run_jobs_worker(ControlBlock* cb, uint8_t* args, size_t n, int rank, int ranks, int64_t spin_ns,
                     const std::function<std::span<uint8_t>(uint64_t)>& seg);
// The message for a job's DataRef whose segment this rank does not hold.
std::string unknown_segment(uint64_t id);
struct JobStream;
// The master's open stream of async jobs, if any: finish it (every job run,
// results kept for their futures) / cancel it (close()).
void finish_jobs(RuntimeCore& c);
void cancel_jobs(RuntimeCore& c) noexcept;
// The same for a failed runtime (heal): the stream's futures whose jobs
// had not finished throw `failure` (WorkerError for `rank`). A stream with
// jobs queued with retries instead keeps its unfinished jobs that have
// retries left, for the next call to queue again on the healed runtime.
void fail_jobs(RuntimeCore& c, const std::string& failure, int rank) noexcept;
// A failed runtime whose stream of async jobs holds unfinished jobs with
// retries left: heals it and queues them again (the call `what` claims the
// runtime for it). False when there are none, when a job with retries has
// none left (the runtime stays failed), or when another call holds the
// runtime.
bool heal_for_jobs(RuntimeCore& c, const std::string& what);
// Forgets the master's JobContext::local objects (close()).
void clear_rank_locals() noexcept;
// The default rank count for CPU ranks: SYNK_WORKERS, else OMP_NUM_THREADS,
// else cpu_count() (ArgumentError for a malformed variable).
int default_workers(bool cuda);
// The master pins itself to one CPU while a runtime is open: fork() notes
// how many it could use before (0: not pinned), which cpu_count() reports.
void note_unpinned_cpus(int n) noexcept;

// ---- the master's state ------------------------------------------------------------

// A training step whose optimizer is sharded over the ranks
// (TrainSpec::shard_optimizer): the params flattened in order (F elements,
// padded to world * slice), rank r updating elements [r * slice, (r + 1) *
// slice) through the update def, whose parameter is the [slice] variable
// `flat` and whose state variables are [slice] too.
struct ShardLayout {
  std::vector<int32_t> params;  // the params' variables, in flat order
  int32_t flat = -1;            // -1: not sharded
  uint64_t slice = 0;
};
// The elements of a slice are a multiple of this (64 bytes of f32): every
// rank's update starts on a cache line and runs whole vectors.
constexpr uint64_t kShardAlign = 16;

// Sharded optimizer state under the name the unsharded step gives it
// (synk::optim's "<param>/<slot>", "<first param>/<slot>" for a scalar):
// `shape` elements of the flat state variable `var` from element `offset`
// of the flat order (rank r holds [r * slice, (r + 1) * slice)), or a
// scalar state variable (shape []) that every rank keeps whole.
struct ShardedState {
  std::string name;
  int32_t var = -1;
  size_t offset = 0;
  Shape shape;
  uint64_t slice = 0;
  bool scalar() const { return shape.empty(); }
};

struct Entry {
  ShardLayout shard;
  std::string name;
  int fn = -1;          // def index
  int update_fn = -1;   // train step: update def index
  uint32_t n_outputs = 0;
  std::vector<Collect> collects;
  std::vector<bool> broadcast;  // per input
  size_t flat_size = 0;         // train: gradient elements
  bool dropped = false;         // made before a distribute() that failed (see Runtime::distribute)
  bool rank_sum = false;        // runs rank_sum steps (collectives mid-function): calls obey their rules
};

// This process's pid without a system call (getpid() is one): cached, and
// renewed in every forked child (pthread_atfork).
pid_t self_pid() noexcept;

// What a master call is, for messages: a text, or a function call made into
// text only when a message needs it (no string work per call).
struct Label {
  Label(const char* t) : text(t) {}
  Label(const std::string& t) : text(t.c_str()) {}  // the string outlives the call
  Label(const std::string& fn, uint64_t call) : fn(&fn), call(call) {}
  std::string str() const { return fn ? "function '" + *fn + "' call #" + std::to_string(call) : std::string(text); }
  const char* text = "";
  const std::string* fn = nullptr;
  uint64_t call = 0;
};

class ForkServer;  // runtime/fork_server.hpp

struct RuntimeCore {
  RuntimeOptions opts;
  int n = 1;
  pid_t master_pid = 0;
  int64_t spin_ns = 0;

  comm::SharedSegment ctl_seg;
  ControlBlock* cb = nullptr;
  std::unique_ptr<comm::CpuGroup> group;
  std::vector<pid_t> pids;      // by rank (0: master)
  std::vector<int> pidfds;      // by rank
  std::vector<int> socks;       // master's end, by rank
  std::vector<int> cpus;        // usable CPUs
  bool affinity_saved = false;
  std::vector<uint8_t> old_affinity;

  // lifecycle and failures
  bool open = false;
  std::atomic<bool> failed{false};
  std::atomic<bool> busy{false};       // a master call is running (see Busy)
  std::atomic<const void*> busy_owner{nullptr};  // the thread running it (thread_mark())
  // Runtime's destructor ran inside a call of the same thread (a map job
  // the master runs): the call closes the runtime as it ends (Busy), and
  // `keep_alive` holds this core until then.
  std::atomic<bool> close_pending{false};
  std::shared_ptr<RuntimeCore> keep_alive;
  // Process-unique: a Data or DataRef of a closed runtime never names a
  // runtime or segment of a later one (segment ids come from one counter
  // per process too).
  uint64_t gen = 0;
  // A failure close() could not throw (it runs from destructors): the
  // timeline's file not written. Runtime::close() throws it as IoError.
  std::string close_error;
  std::atomic<bool> stopping{false};   // exits are expected (close or after a failure)
  std::atomic<int> reaped{0};
  std::mutex fail_mu;
  std::string fail_msg;  // why it failed, e.g. "worker rank 1 (pid 7) was killed by signal 9 (SIGKILL)"
  int fail_rank = -1;
  std::thread watcher;
  int stop_efd = -1;

  uint32_t seq = 0;
  uint64_t calls = 0;

  // segments known to the workers: id -> master mapping
  std::unordered_map<uint64_t, std::span<const uint8_t>> seg_ptr;
  // and what a replacement worker needs to map it again (heal): the
  // segment's fd (its owner keeps it open until release) and the rank it
  // went to (-1: every worker).
  struct SegSent {
    int fd;
    int rank;
    uint64_t size;
  };
  std::unordered_map<uint64_t, SegSent> seg_sent;
  // Each worker's CPU (-1: not pinned), as fork() chose: a replacement
  // takes its rank's.
  std::vector<int> worker_cpus;
  comm::SharedSegment args;
  uint64_t args_id = 0;
  std::vector<comm::SharedSegment> results;
  std::vector<uint64_t> result_ids;

  // the timeline (RuntimeOptions::trace): every rank's log, written at close()
  std::unique_ptr<trace::Logs> trace;
  // every rank's training-step phases (Runtime::stats)
  std::unique_ptr<trace::StepLogs> steps;
  std::string trace_path;

  // graph and functions
  Graph* graph = nullptr;
  Device device = Device::cpu;  // where the ranks compute
  int gpus = 0;                 // visible GPUs (device cuda)
  // CUDA ranks of the nodes before this one that share its GPUs (several
  // nodes on one machine; 0 when alone): local rank r uses GPU
  // rank_gpu(gpu_first, r, gpus).
  int gpu_first = 0;
  // This node's place among the ranks of its machine (host_place; nodes > 1).
  HostPlace place;
  comm::CommKind comm_kind = comm::CommKind::host;  // every rank's (host_staged or nccl on CUDA ranks)
  // Rank 0's (made with the runtime; computes once the first function is made).
  std::unique_ptr<Rank> rank;
  std::vector<FunctionDef> defs;
  std::vector<Entry> entries;
  // Sharded training steps' optimizer state by its unsharded names (the
  // latest step's first, for get, set, snapshot and restore), and the flat
  // variables a snapshot leaves out (they are these names' storage, or a
  // rank's copy of its slice of the params).
  std::vector<ShardedState> sharded_state;
  std::vector<int32_t> shard_vars;
  const ShardedState* sharded(const std::string& name) const {
    for (size_t i = sharded_state.size(); i-- > 0;)
      if (sharded_state[i].name == name) return &sharded_state[i];
    return nullptr;
  }
  size_t distributed_defs = 0;
  size_t distributed_entries = 0;
  size_t distributed_nodes = 0;

  ~RuntimeCore();
  // Refuses calls from a worker process, on a closed runtime and on a failed
  // one (the last naming `what` and the original failure).
  void check_usable(const std::string& what);
  // Throws WorkerError "synk runtime: <what> failed: <fail_msg>".
  [[noreturn]] void throw_failure(const std::string& what);
  void fail(const std::string& msg, int rank) noexcept;  // sticky; kills the workers
  // A collective failed on the master with `err` (a CpuGroup error): blames
  // the worker that aborted the group or was waited for, marks the runtime
  // failed and throws.
  [[noreturn]] void fail_collective(const std::string& what, const std::string& err);
  void close() noexcept;
  // close() from the API: waits for a call another thread is running, then
  // closes. Inside a call of this thread (a map job the master runs) it is
  // refused (ArgumentError) when `may_throw`, else (a destructor) deferred to
  // the call's end; in a worker process it is refused, or does nothing.
  // `self` is the caller's handle of this core. Then throws close_error
  // (IoError) when `may_throw`, else prints it.
  void close_from_api(const std::shared_ptr<RuntimeCore>& self, bool may_throw);
  // Claims the runtime as a call does (busy): at once or not at all
  // (try_claim), or waiting while another thread runs a call (claim: false
  // without claiming when this thread runs one). unclaim() gives it back.
  bool try_claim() noexcept;
  bool claim() noexcept;
  void unclaim() noexcept {
    busy_owner.store(nullptr, std::memory_order_relaxed);
    busy.store(false, std::memory_order_release);
  }
  void watch();
  // Runtime::heal: a failed runtime gets fresh workers for every rank
  // (the survivors were stopped when it failed), given the segments,
  // functions and variables of the master (rank 0, whose copy is whole).
  // Several nodes: every node heals; the link is renewed first (every
  // node must be healing) and the variables are node 0's master's.
  // Nothing on a healthy runtime. Throws (the runtime failed again) when a
  // replacement cannot be started or a node does not heal; `what` names
  // the caller.
  void heal(const char* what);
  // heal's parts: the variables given to every rank (from node 0's master
  // with several nodes), and the link between the masters renewed.
  void heal_variables(const char* what);
  void renew_link(const char* what);
  // Starts worker rank r from `server` over its end `sock` of a new
  // socketpair; fills pids[r] and pidfds[r]. The caller is a child subreaper.
  void start_worker(ForkServer& server, int r, int sock);

  // The stall watcher (runtime/stall.cpp, RuntimeOptions::stall_after_s): a
  // thread that samples every rank's board entry (WorkerSlot::doing) while a
  // call runs and reports ranks that others wait for.
  std::thread stall_thread;
  std::mutex stall_mu;  // guards what follows
  std::condition_variable stall_cv;
  bool stall_stop = false;
  std::vector<trace::Event> stall_events;  // the reports' spans, for the timeline
  std::vector<std::string> fn_names;       // the distributed functions' names, for reports
  void start_stall_watcher();
  void stop_stall_watcher() noexcept;
  void stall_watch();

  // Shared gradient buffers (ControlBlock::grads_seg): made or grown before
  // a training step of CPU ranks on one node needs `elems` floats.
  std::vector<comm::SharedSegment> grads_segs;
  std::vector<uint64_t> grads_ids;
  void ensure_shared_grads(size_t elems);

  // jobs (runtime/jobs.cpp): the per-rank result spaces and the open stream
  // of async jobs.
  std::vector<comm::SharedSegment> arenas;
  std::vector<uint64_t> arena_ids;
  std::shared_ptr<JobStream> stream;
  std::shared_ptr<JobBatch> batch;  // the futures' view of `stream`

  uint64_t publish(const comm::SharedSegment& seg, int rank);  // rank -1: every worker
  void release(uint64_t id, int rank) noexcept;
  void ensure_args(size_t bytes);
  void ensure_result(int rank, size_t bytes);
  // Puts bytes into the args segment (growing it) and sets the header.
  void set_args(const std::vector<uint8_t>& bytes);

  void signal(Cmd c, bool collective);
  // Waits until every worker finished the current command; throws
  // WorkerError for a death/timeout (sticky) or a worker's exception.
  void wait_workers(const Label& what);
  // Whether calls may go ahead (open, not failed, in the master): the fast
  // check before check_usable's message.
  bool usable() const { return open && !failed.load(std::memory_order_relaxed) && self_pid() == master_pid; }

  // functions
  void attach_graph(Graph* g, const char* what);
  int add_def(const FunctionDef& d);
  int32_t var_id(const VarRef& v, const char* what);
  // Ranks whose comm is joined through bootstrap bytes (NCCL): after the
  // first distribute, node 0's master makes them, every rank joins at once
  // (Cmd::comm_init); a failure fails the runtime.
  void join_comms();

  // ---- multi-node (runtime/nodes.cpp; docs/multinode.md) ----
  // Ranks are global and node-major: this node's local rank r is global
  // rank base + r; world counts every node's ranks. One node: 0, 1, 0, n.
  int node = 0, nodes = 1, base = 0, world = 1;
  std::vector<int> node_sizes;            // ranks of each node
  std::unique_ptr<comm::NodeLink> link;   // the master's MPI end (nodes > 1)
  bool multi() const { return nodes > 1; }
  // Set while the runtime's own jobs run on this node only (argsort, whose
  // jobs write into this node's shared arrays).
  bool jobs_here = false;
  int node_of(int rank) const;            // the node of a global rank
  int node_base(int k) const;             // node k's first global rank
  // Every node master must make the same call at the same point: compares
  // (kind, a, b, text) over the masters and throws ArgumentError naming
  // both nodes' calls if they differ. Nothing on one node.
  void agree(const char* kind, uint64_t a, uint64_t b, const std::string& text);
  // Runs one exchange over the link; a failure there (a peer node's failure
  // notice, a timeout, MPI) fails this runtime and throws its WorkerError.
  template <class F> auto over_link(const std::string& what, F&& f) -> decltype(f());
  // Tells the other nodes that this runtime failed (master thread; once).
  void notify_nodes() noexcept;
  // Runs a master call; with several nodes, an exception out of it fails
  // the runtime and tells the other nodes (they would otherwise wait for
  // this node at the next exchange): a failure anywhere ends the job.
  template <class F> auto on_every_node(F&& f) -> decltype(f());
  // Whether a peer's failure ends the waits of this rank's comm.
  bool comm_cancelled() const { return failed.load() || (group && group->aborted()); }
};

template <class F> auto RuntimeCore::over_link(const std::string& what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const WorkerError&) {
    throw;
  } catch (const ArgumentError&) {
    throw;
  } catch (const std::exception& e) {
    fail(e.what(), -1);
    throw_failure(what);
  }
}

template <class F> auto RuntimeCore::on_every_node(F&& f) -> decltype(f()) {
  if (!multi()) return f();
  try {
    return f();
  } catch (const std::exception& e) {
    if (open && self_pid() == master_pid) {
      fail("node " + std::to_string(node) + ": " + e.what(), -1);
      notify_nodes();
    }
    throw;
  }
}

// Multi-node set-up in fork() (runtime/nodes.cpp): whether to join other
// nodes (RuntimeOptions::multi_node and the launcher's environment), and
// joining them: the link, every node's rank count (n here), the options
// every node must share checked. Fills c.node, nodes, base, world,
// node_sizes and the control block's copy.
bool want_nodes(const RuntimeOptions& o);

// Whether `d` is a live Data of runtime `c` (made by it, and `c` is the
// runtime that made it, not a later one at the same address); else an
// ArgumentError for `what` naming the Data (dtype, shape, segment) and why.
inline bool owns_data(const RuntimeCore& c, const Data::Impl& d) { return d.core == &c && d.gen == c.gen && d.seg; }
[[noreturn]] void refuse_data(const RuntimeCore& c, const Data::Impl& d, const std::string& what);
// Refuses (as refuse_data) a Data whose runtime was closed, whichever
// runtime is open now.
void check_data_open(const Data::Impl& d, const std::string& what);
void join_nodes(RuntimeCore& c, int n);

// Marks a master call as running for its lifetime. A second call while one
// runs (from another thread, or re-entrant from inside a map job in the
// master) is refused with ArgumentError instead of corrupting the control
// block: the master's side of the runtime is single-threaded by design.
class Busy {
 public:
  // Finishes an open stream of async jobs first unless `keep_jobs` (the
  // job calls themselves).
  Busy(RuntimeCore& c, const std::string& what, bool keep_jobs = false);
  ~Busy() {
    if (c_.close_pending.load(std::memory_order_relaxed)) [[unlikely]]
      finish_deferred_close();
    c_.unclaim();
  }
  Busy(const Busy&) = delete;
  Busy& operator=(const Busy&) = delete;

 private:
  void finish_deferred_close() noexcept;
  RuntimeCore& c_;
};

// This thread's identity without a system call: the address of a
// thread_local (Busy::busy_owner).
const void* thread_mark() noexcept;
// A process-unique number (segment ids, RuntimeCore::gen), never 0.
uint64_t next_unique_id() noexcept;

// ---- CUDA ranks (runtime/rank_setup.cpp) --------------------------------------
// What local rank `local_rank` of this node is made of (its device, GPU and
// comm), by one rule for the master and every worker.
RankSetup rank_setup(const RuntimeCore& c, int local_rank);
// Whether CUDA ranks use NCCL: comm = nccl (any rank count, one GPU each),
// or automatic with more than one rank, one GPU each, in a build with NCCL.
// Throws ArgumentError for comm = nccl in a build without NCCL.
bool want_nccl(CommBackend comm, int ranks, int gpus);

// The GPU of local rank `local_rank` of a node whose machine's GPUs (`gpus`
// of them) the ranks of other nodes of the job use too, `gpu_first` of them
// from nodes before this one (0 for a node alone). Every rank of the
// machine gets a GPU of its own while there are enough (what NCCL needs);
// beyond that, host-staged ranks share them in turn.
int rank_gpu(int gpu_first, int local_rank, int gpus);

// A node of a multi-node job as its fork stamp describes it.
struct NodeGpus {
  int ranks = 0;          // its CUDA ranks
  int gpus = 0;           // the GPUs it sees
  int host = 0;           // the lowest node index on its machine (comm::NodeLink::host_leader)
  uint64_t devices = 0;   // which GPUs of the machine it sees: a hash of CUDA_VISIBLE_DEVICES, 0 when unset
};
// The joint GPU decisions of the nodes, made alike on every node from every
// node's stamp. Nodes on one machine seeing the same devices share its GPUs:
// their ranks are numbered one after the other there (gpu_first), and
// unless comm is host_staged they need a GPU per rank all together (else
// ArgumentError, the same on every node, naming those nodes). comm: nccl
// (one communicator over the job's ranks) by want_nccl for the job's rank
// count, else host_staged.
struct NodesGpuPlan {
  int gpu_first = 0;  // for RuntimeCore::gpu_first of node `node`
  comm::CommKind comm = comm::CommKind::host_staged;
};
NodesGpuPlan plan_node_gpus(std::span<const NodeGpus> nodes, int node, CommBackend comm);
// Where node `node`'s ranks go among the CPUs of its machine (HostPlace).
HostPlace host_place(std::span<const NodeGpus> nodes, int node);

// Worker entry, in the forked child: never returns.
[[noreturn]] void worker_main(RuntimeCore& core, int rank) noexcept;

}  // namespace synk::detail
