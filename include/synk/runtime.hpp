// synk/runtime.hpp — data parallelism over forked worker processes.
//
// synk::fork() starts N ranks: the calling process becomes the master
// (rank 0, which computes too) and N-1 worker processes are forked from it;
// only the master returns. Build graphs and functions in the master, call
// distribute() to ship them to the workers (each builds its own Session with
// the same seed, so shared variables start equal; dropout differs per rank),
// put data into shared memory with data(), then call functions: scattered
// inputs are split along dim 0 over the ranks, each rank computes its share,
// and the outputs are combined by their Collect mode.
//
//   synk::Runtime rt = synk::fork({.workers = 2});
//   synk::Graph g;
//   auto x = g.input("x", synk::f32, {synk::batch, 784});
//   ...
//   auto train = rt.train_step({.name = "train", .inputs = {x, y},
//                               .outputs = {{loss}}, .loss = loss, .params = params,
//                               .optimizer = [](auto& p, auto& g) { return synk::optim::sgd(p, g); }});
//   rt.distribute();
//   synk::Data X = rt.data(images), Y = rt.data(labels);
//   float l = train({X, Y}, {.batch = idx}).at(0).scalar();
//   rt.all_reduce({"l1/W"}, synk::ReduceOp::avg);
//   rt.close();
//
// Processes. Workers are forked copies of the master, made through a fork
// server (a child forked at fork() while the process is free of CUDA), and
// are the master's children: they never return from fork(); they run the
// worker loop and end with _exit() (the worker process's own end, never the
// master's). They see the program's memory as it was at that fork() -- for
// CUDA ranks, at the process's first CUDA fork(), whose server is kept so
// that close() and fork() again work with CUDA ranks (recovery). They die
// with the master (PR_SET_PDEATHSIG, following its main thread), ignore
// SIGINT (a Ctrl-C is the master's to handle), and are pinned to CPUs
// round-robin. Fork before any other threads you start, from the main
// thread, and keep it alive while the runtime is open.
//
// Failures. A worker that dies makes the pending or next master call throw
// WorkerError naming the rank and its signal or exit code (at once: a
// watcher thread waits on every worker's pidfd and wakes the master, whose
// waits also wake every 50 ms in case a wake-up is lost); the other workers
// are then killed and the runtime stays failed (every call throws the same
// error) until close(). An
// exception inside a worker is rethrown in the master as WorkerError with
// the worker's message; the runtime stays usable unless the failing command
// involved a collective. Bad arguments are refused in the master before any
// worker is touched (ArgumentError/ShapeError/TypeError) and the next call
// works. A worker that stops answering (hung, SIGSTOPped) makes the call
// throw WorkerError after RuntimeOptions::timeout (collective_timeout inside
// collectives and training steps). Messages name the rank, the pid, the
// signal or exit code and the call ("function 'f' call #12"); the table of
// every fault and its outcome is docs/faults.md.
//
// Values are not checked: NaN and Inf in inputs or variables propagate like
// in any float computation (collect max/min follow std::max/min).
//
// Threads and processes. The master's side is used by one thread at a time:
// a call made while another runs (from a second thread, or re-entrant from a
// map job in the master) is refused with ArgumentError, and so is any call
// made in a worker process (e.g. from a map job), where the runtime object is
// only a forked copy.
//
// Recovery. A failed runtime keeps the master's copy of every shared
// variable; snapshot() takes it, and after close() and a new fork() (same
// process, same graph) restore() gives it to every rank, so a long training
// run survives a crashed worker:
//
//   synk::VarValues saved;
//   synk::Data Xd = rt.data(images), Yd = rt.data(labels);
//   try {
//     for (int epoch = 0; epoch < 10; ++epoch) step({Xd, Yd}, {.batch = idx});
//   } catch (const synk::WorkerError&) {
//     saved = rt.snapshot();           // the master's values
//   }
//   rt.close();
//   rt = synk::fork(opts);             // fresh workers (CUDA ranks too)
//   step = rt.train_step(spec);        // functions and Data belong to a runtime:
//   rt.distribute();                   //   make them again
//   rt.restore(saved);                 // every rank gets the master's values
//   Xd = rt.data(images);
//   Yd = rt.data(labels);
//
// Functions are made again from the same specs (the graph keeps growing; a
// train step's gradient inputs get fresh names; an optimizer made again over
// the same parameters reuses its state variables, e.g. "<param>/velocity",
// which restore() then fills). The master's copy is whole at any failure:
// a training step's update runs
// in the master only after its all-reduce completed, so the snapshot holds
// the parameters (and optimizer state) before or after that step, never a
// mix. A plain function's updates are applied on each rank to its own copy.
// Several nodes: a runtime of several nodes is not forked again after a
// failure; heal() it on every node (Runtime::heal), or save_checkpoint() on
// the failed runtime, close() it, end the job and start it again from the
// checkpoint (docs/multinode.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "synk/array.hpp"
#include "synk/data.hpp"
#include "synk/error.hpp"
#include "synk/graph.hpp"
#include "synk/jobs.hpp"

namespace synk {

// A worker died, timed out or failed; rank() says which (-1: unknown).
class WorkerError : public Error {
 public:
  WorkerError(const std::string& what, int rank) : Error(what), rank_(rank) {}
  int rank() const { return rank_; }

 private:
  int rank_;
};

// How CUDA ranks combine shared variables and gradients (RuntimeOptions::comm).
// host_staged: device -> shared memory -> the CPU collectives -> device; the
// only backend that lets several ranks share one GPU. nccl: one GPU per rank;
// training steps all-reduce gradients on the GPUs and broadcast / all_reduce
// / reduce of shared variables run on the device copies (gather, all_gather
// and scatter, whose data comes from or goes to the master's host, stay
// host-staged); the communicator is made at the first distribute().
// automatic: nccl with several ranks on one GPU each in a build with NCCL,
// else host_staged.
enum class CommBackend : uint8_t { automatic = 0, nccl, host_staged };

// Whether fork() joins the processes of a multi-node launch
// (RuntimeOptions::multi_node; docs/multinode.md). A launcher (mpirun,
// srun) starts one process per node; each calls fork() and becomes its
// node's master; MPI joins the masters. automatic: join when the
// environment shows a launcher that started more than one process
// (OMPI_COMM_WORLD_SIZE, PMI_SIZE, or SLURM_NTASKS inside an srun step) and
// the build has MPI; off: this process is a node alone whatever the
// environment; mpi: join through MPI (even a single process), an
// ArgumentError in a build without MPI.
enum class MultiNode : uint8_t { automatic = 0, off, mpi };

// Where a runtime's ranks compute: RuntimeOptions::device ("cpu", "cuda",
// "auto") as fork() resolves it, the one spelling inside the library.
enum class Device : uint8_t { cpu = 0, cuda = 1 };

// One rank in a stall report (RuntimeOptions::stall_after_s).
struct RankActivity {
  int rank = 0;          // global rank
  int node = 0;          // its node (0 on one machine)
  int pid = 0;
  // What it is in: a phase of the call ("forward+backward", "gradient
  // all-reduce", "gather inputs", "update", "map jobs", ...), "done" (it
  // finished its part and waits), or "the command, not started yet".
  std::string doing;
  std::string function;  // the function it runs, "" for none
  uint64_t call = 0;     // the runtime's call number, 0: none
  int64_t detail = -1;   // the bucket it all-reduces or the (first) job it runs, -1: none
  int64_t detail_end = -1;  // one past the last job of the chunk it runs
  bool in_comm = false;  // inside a collective: waiting there for its peers (or reducing)
  bool stopped = false;  // its process is stopped (SIGSTOP, a debugger)
  double seconds = 0;    // how long it has been doing that (as the watcher saw)
};

// A stall: some ranks of a call have waited stall_after_s for others.
struct StallReport {
  std::string what;      // the master's call, e.g. "function 'train' call #12"
  double waited_s = 0;   // how long the waiting ranks have waited
  int repeat = 0;        // 0: the first report of this stall, then 1, 2, ... (one per stall_after_s)
  std::vector<RankActivity> late;     // the ranks the others wait for
  std::vector<RankActivity> waiting;  // the ranks that wait
  std::string text;      // the report as written to stderr
};

struct RuntimeOptions {
  // Ranks in total, master included. 0: the environment variable
  // SYNK_WORKERS if set; else one per visible GPU for CUDA ranks (device
  // "cuda", or "auto" with a GPU); else OMP_NUM_THREADS if set (its first
  // level), as sharedmem does; else synk::cpu_count() (jobs.hpp: affinity
  // and cgroup quota). A malformed variable is an ArgumentError.
  int workers = 0;
  // "cpu"; "cuda": rank r computes on GPU r of the visible ones (a
  // CudaSession per rank; more ranks than GPUs only with comm =
  // host_staged, rank r then on GPU r % count); "auto": "cuda" when a GPU is
  // visible, else "cpu". The devices are counted in a short-lived child so
  // the master creates no CUDA context before fork. A forked child cannot
  // use CUDA initialised in its parent, so CUDA ranks come from the fork
  // server made at the process's first CUDA fork(), before the master (rank
  // 0) makes its own context; it is kept, and later forks (after close(),
  // e.g. to recover from a dead worker) use it. fork() refuses CUDA ranks in
  // a process that initialised CUDA before its first CUDA runtime (a
  // CudaSession, or a device query in this process; CudaSession::available()
  // asks in a child).
  const char* device = "cpu";
  CommBackend comm = CommBackend::automatic;  // CUDA ranks only
  uint64_t seed = 0;          // every rank's Session seed
  bool pin = true;            // pin rank r to the r-th usable CPU (mod count)
  // Waiting workers (and the master waiting for them) spin this long before
  // sleeping on a futex. Ignored (2 us) when ranks outnumber CPUs.
  std::chrono::nanoseconds spin = std::chrono::microseconds(100);
  // The master gives up on a command a worker has not finished after this.
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
  // Every wait inside a collective.
  std::chrono::milliseconds collective_timeout = std::chrono::seconds(60);
  // How long close() lets workers leave before killing them.
  std::chrono::milliseconds close_timeout = std::chrono::seconds(2);
  // A timeline of every rank, written to this file at close() (also after a
  // failure) as Chrome trace-event JSON: open it in ui.perfetto.dev or
  // chrome://tracing. One track per rank; spans for each command and its
  // phases (waiting for the command, gathering input rows, forward+backward,
  // the gradient all-reduce, the update, writing results; in the master the
  // call, waiting for the workers, combining) with the function and call
  // number; a CUDA rank also gets a track for its compute stream and one for
  // its comm's stream, with each training step's work there as the GPU ran
  // it (CUDA events; the step then waits for its device work). Null or
  // empty: the SYNK_TRACE environment variable's path, if
  // set; else no timeline (and no cost). fork() refuses a path it cannot
  // write (ArgumentError); a relative path is taken from the directory
  // current at fork(). A file that cannot be written at close() makes
  // close() throw IoError (a destructor prints it). Several nodes: node 0 writes this file, node k
  // "<name>.node<k><.ext>" beside it, tracks named by global rank.
  const char* trace = nullptr;
  // Reproducible results whatever the rank count: every call's
  // batch is split into deterministic_chunks fixed row chunks (fewer for a
  // batch of fewer rows), the same for any number of ranks; each chunk is computed with
  // dropout keyed by the call and the chunk's first row (not by the rank),
  // and training gradients and reported outputs are combined chunk by chunk
  // in chunk order. Two runs with the same seed then give bitwise-equal
  // parameters and outputs, and so do runs with any worker count. Costs:
  // smaller matrix products (one per chunk), and a training step exchanges
  // every chunk's gradients instead of one summed buffer (bench/results/
  // has the figures).
  // Updates of plain calls stay per rank (as without this option), and
  // CallOptions::num_slices is ignored (the chunks are the slices). CUDA
  // ranks are reproducible alike among GPUs of one model (cuBLAS picks its
  // kernels by device), not bit-equal to CPU ranks.
  bool deterministic = false;
  // The chunks of a deterministic call (1 to 4096). Results depend on it
  // (compare runs with the same value) but not on the rank count; 12 splits
  // evenly over 1, 2, 3, 4 or 6 ranks, fewer chunks cost less.
  int deterministic_chunks = 12;
  // Training steps all-reduce their gradients in buckets of about this many
  // bytes, each as soon as the backward pass has produced it (last layer
  // first), while backward goes on through the layers before it; the
  // results are the same bits as one all-reduce after backward (0: that).
  // On CPU ranks a bucket is reduced while it is still in cache (with
  // multi-slice and deterministic calls, and on CUDA ranks for now, the
  // all-reduce follows the backward pass). Applies to calls with one
  // slice; DDP's bucket_cap_mb plays the same part (25 MB there).
  size_t bucket_bytes = size_t{1} << 20;
  // Multi-node jobs. Every node's process makes the same calls in the same
  // order (checked: a call that differs between nodes is an ArgumentError
  // naming both, not a hang); each loads the data itself; ranks are
  // numbered globally, node by node, and size() counts all of them. Rank
  // shares, Collect modes, collectives, training steps and map() span every
  // node, and every node's master gets the same results. Nodes may have
  // different worker counts but must agree on device, comm, seed and the
  // deterministic options. A failure anywhere ends the job (docs/multinode.md).
  MultiNode multi_node = MultiNode::automatic;
  // Stall reports: when a call (function, training step, collective,
  // distribute, map or async jobs) has waited this many seconds for some of
  // its ranks, the master writes one report to stderr, into the timeline
  // and to on_stall: each late rank (global rank, node, pid), what it is in
  // (the phase, function and call; the bucket or job), whether its process
  // is stopped, for how long, and what the waiting ranks are in; again
  // every stall_after_s while the stall lasts (docs/faults.md). The call goes
  // on: timeout and collective_timeout still end a hang. A watcher thread
  // of the master looks a few times per stall_after_s (at most once a
  // second); the ranks publish their phase with a few stores per span (no
  // clock read, no system call). 0: off.
  double stall_after_s = 10;
  // Called with each stall report, on the watcher thread, after stderr
  // (must not call the runtime; it may copy the report and return).
  std::function<void(const StallReport&)> on_stall;
};

// The phases of a training step on a rank (Runtime::stats): gathering its
// input rows, forward+backward, the gradient all-reduce (its reduction and
// the wait for the other ranks; a bucket sent during the backward pass
// counts here), the update, and idle (since the rank's previous step
// ended: the program's time between steps, or waiting for the command).
enum class StepPhase : uint8_t { inputs, forward_backward, all_reduce, update, idle };
constexpr int kStepPhases = 5;
const char* step_phase_name(StepPhase p);

struct PhaseTimes {
  double p50_ms = 0, p90_ms = 0, max_ms = 0;
  uint64_t samples = 0;
};
struct RankStepStats {
  int rank = 0;        // global rank
  int node = 0;
  uint64_t steps = 0;  // training steps it ran (the figures cover the last 4096)
  PhaseTimes phase[kStepPhases];  // by StepPhase
};
// Per rank and phase over a run's training steps, and the straggler: the
// rank and phase (all but the all-reduce, which is where the others wait
// for it) whose p50 lies furthest above the ranks' median p50 of that
// phase; with one rank, or no such excess, the slowest rank's longest phase.
struct StepStats {
  std::vector<RankStepStats> ranks;  // this node's ranks
  int slowest_rank = -1;             // -1: no training step yet
  StepPhase slowest_phase = StepPhase::forward_backward;
  double slowest_p50_ms = 0;         // its p50
  double median_p50_ms = 0;          // the ranks' median p50 of that phase
  std::string table() const;         // the table synk-mnist --report prints
};

// Shared variables' values by name (Runtime::snapshot / restore).
using VarValues = std::vector<std::pair<std::string, Array>>;

enum class ReduceOp : uint8_t { sum = 0, avg, max, min, prod };

// Per-call options.
struct CallOptions {
  Batch batch;         // rows of the scattered inputs (default: all)
  int num_slices = 1;  // each rank runs its share in this many sequential slices
};

// One input of a call: a Data (shared memory, no copy) or a host array
// (copied into shared memory for this call).
class Arg {
 public:
  Arg(const Data& d) : data_(&d), view_() {}
  Arg(const Array& a) : view_(a.view()) {}
  Arg(const ArrayView& v) : view_(v) {}
  const Data* data() const { return data_; }
  const ArrayView& view() const { return view_; }

 private:
  const Data* data_ = nullptr;
  ArrayView view_;
};

// A shared variable by handle or by name.
class VarRef {
 public:
  VarRef(Tensor t) : t_(t) {}
  VarRef(std::string name) : name_(std::move(name)) {}
  VarRef(const char* name) : name_(name) {}
  const Tensor& tensor() const { return t_; }
  const std::string& name() const { return name_; }

 private:
  Tensor t_;
  std::string name_;
};

// A training step: gradients of `loss` w.r.t. `params` on every rank's
// share, averaged over all rows (weighted by rows, so uneven splits give
// the exact mean) in ONE all-reduce over a flat buffer, then `optimizer`'s
// updates applied on every rank (so parameters stay equal).
struct TrainSpec {
  std::string name;
  std::vector<Tensor> inputs;
  std::vector<OutputSpec> outputs;  // reported values, e.g. {{loss}}
  Tensor loss;                      // scalar f32, a mean over rows
  std::vector<Tensor> params;       // f32 variables
  std::function<std::vector<Update>(const std::vector<Tensor>& params,
                                    const std::vector<Tensor>& grads)> optimizer;
  std::vector<Tensor> broadcast;    // inputs given whole to every rank
  // ZeRO-1: the optimizer's update and its state sharded over the ranks.
  // The params are taken as one flat vector (in order, F elements) cut into
  // one slice per rank (S = ceil(F / ranks) rounded up to 16 elements, the
  // last slices padded with zeros); the gradients are reduce-scattered, so
  // each rank receives the combined gradient of its slice only; each rank
  // runs `optimizer` on its slice (called once, with one [S] parameter and
  // its [S] gradient: its state variables are [S] on every rank, each
  // holding its own slice, about 1/ranks of the unsharded state); then the
  // parameters are all-gathered. The parameters are bitwise those of the
  // unsharded step (the reductions sum in the same order, the update is
  // the same per-element formula) on the CPU group, several nodes, host
  // staging and the emulated NCCL; a real NCCL does not promise its
  // reduce-scatter the bits of its all-reduce. With gradient buckets
  // (RuntimeOptions::bucket_bytes) CPU ranks of one node reduce-scatter
  // each bucket as backward finishes it; other comms all-reduce the buckets
  // (a bucket's tensors do not fall on slice boundaries) and the update is
  // sharded all the same. In deterministic mode the gradient is summed in
  // chunk order as unsharded (whole, on every rank), then the update is
  // sharded.
  // The optimizer must be elementwise (synk::optim's sgd, momentum,
  // nesterov, adam, rmsprop, adamw, with or without a schedule: its scalar
  // step counter is kept whole by every rank) and name its state
  // "<param>/<slot>" as synk::optim does; anything that needs the whole
  // gradient (clip_by_global_norm) is refused with an ArgumentError.
  // Runtime::get / set / snapshot / restore (and checkpoints) see the state
  // under the unsharded names and shapes ("W/m", "W/t"), gathered from (or
  // scattered to) the ranks, so a checkpoint loads onto any rank count,
  // sharded or not.
  bool shard_optimizer = false;
};

class Runtime;
namespace detail { struct RuntimeCore; }

// A function made by a Runtime: callable from the master once distributed.
class ParallelFunction {
 public:
  ParallelFunction() = default;
  // Inputs in the order of the spec's inputs. Returns the combined outputs.
  std::vector<Array> operator()(const std::vector<Arg>& inputs, const CallOptions& opts = {}) const;
  const std::string& name() const;
  int index() const { return index_; }

  ParallelFunction(std::shared_ptr<detail::RuntimeCore> o, int index)
      : owner_(std::move(o)), index_(index) {}

 private:
  std::vector<Array> call(const std::vector<Arg>& inputs, const CallOptions& opts) const;
  std::shared_ptr<detail::RuntimeCore> owner_;
  int index_ = -1;
};

Runtime fork(const RuntimeOptions& opts = {});
// How many processes a launcher (mpirun, srun) started together with this
// one, from the environment (1: none); fork() joins them as nodes
// (RuntimeOptions::multi_node). Programs use it to take the runtime's path
// even with one rank per node.
int launched_processes();

class Runtime {
 public:
  Runtime();  // closed
  Runtime(Runtime&&) noexcept;
  Runtime& operator=(Runtime&&) noexcept;
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  ~Runtime();  // close(), never throws

  bool is_open() const;
  int size() const;  // ranks in total, of every node (0 when closed)
  // Multi-node jobs (RuntimeOptions::multi_node): this node's index and the
  // node count (0 and 1 on one machine), this node's own rank count, and
  // the global rank of this process (its node's first rank; 0 on one
  // machine). Print and write files from node 0.
  int node() const;
  int nodes() const;
  int local_size() const;
  int rank() const;

  // ---- functions ------------------------------------------------------------
  // `broadcast` lists inputs given whole to every rank; the others are
  // scattered along dim 0 (they must have a batch dim). All functions of a
  // runtime belong to one Graph. Outputs are combined by their Collect mode
  // (graph.hpp says what each gives); an output with a batch dim must use
  // Collect::gather.
  ParallelFunction function(const FunctionSpec& spec, const std::vector<Tensor>& broadcast = {});
  ParallelFunction train_step(const TrainSpec& spec);
  // Ships the graph and every function made so far to the workers. Call it
  // again after making more functions; variable values are kept. If it
  // fails on any rank (an exception, not a dead worker), every rank keeps
  // the functions of the last distribute() that worked, the functions made
  // since are dropped (their calls are refused: make them again) and the
  // runtime stays usable.
  void distribute();

  // ---- data -----------------------------------------------------------------
  Data data(const ArrayView& value);
  Data data(DType dtype, Shape shape);  // zero-filled

  // ---- collectives on shared variables (every rank's copy) ---------------------
  // A list names each variable at most once; ops and roots are checked in
  // the master (ArgumentError) before any rank is touched.
  void broadcast(const std::vector<VarRef>& vars, int root = 0);
  void all_reduce(const std::vector<VarRef>& vars, ReduceOp op = ReduceOp::avg);
  // Only root's copy receives the reduction.
  void reduce(const std::vector<VarRef>& vars, ReduceOp op = ReduceOp::avg, int root = 0);
  // Every rank's value stacked in rank order: shape [size(), ...var shape].
  Array gather(const VarRef& var);
  Array all_gather(const VarRef& var);  // same result; every rank receives it
  // values has shape [size(), ...var shape]; rank r gets values[r].
  void scatter(const VarRef& var, const ArrayView& values);
  Array get(const VarRef& var, int rank = 0);
  void set(const VarRef& var, const ArrayView& value, int rank);  // one rank
  void set(const VarRef& var, const ArrayView& value);            // every rank

  // ---- plain jobs (synk/jobs.hpp says how jobs run, travel and fail) ------------
  // fn(job) or fn(ctx, job) for every job on all ranks, dynamically
  // balanced; the results in job order (nothing for a void fn).
  // Several nodes: node k runs the k-th contiguous block of the jobs on its
  // own ranks (JobContext::rank()/ranks() count those), and every node gets
  // every result, in job order (map_reduce folds them in job order too). A
  // job's writes into a Data reach only its own node's copy: jobs that
  // should be seen everywhere return their results. apply_async/map_async,
  // argsort and sort stay on the node that calls them.
  //
  // retries (map, map_reduce, map_reduce_ordered; one node): 0, the
  // default, and a rank that dies or hangs in a job fails the runtime
  // (WorkerError naming it). With retries > 0 the jobs run on the workers
  // only (never in the master), and when a worker is lost the runtime heals
  // (heal(): every worker replaced, same rank count) and the jobs whose
  // results had not arrived run again, up to `retries` times; every result
  // is delivered once. After the last retry the runtime is failed and the
  // WorkerError names the job the lost rank was running. A job's own
  // exception is never retried.
  template <class F, class J> auto map(F fn, const std::vector<J>& jobs, int retries = 0);
  // map, folding each result into `init` in the master as soon as it
  // arrives: init = reduce(std::move(init), result), in the order the jobs
  // finish (any order; the master folds between jobs of its own and while
  // it waits). Use it for associative, commutative folds.
  template <class F, class J, class T, class Red>
  T map_reduce(F fn, const std::vector<J>& jobs, T init, Red reduce, int retries = 0);
  // The same, folded in job order: result i as soon as results 0..i are in.
  template <class F, class J, class T, class Red>
  T map_reduce_ordered(F fn, const std::vector<J>& jobs, T init, Red reduce, int retries = 0);
  // Queues one job and returns at once (multiprocessing's apply_async).
  // retries (one node) as for map: 0, the default, and a rank that dies or
  // hangs while the job is queued or running fails the runtime and get()
  // throws WorkerError naming it. With retries > 0 the job runs on the
  // workers only; a failure while it has not finished heals the runtime
  // (inside the next get(), wait(), join() or other call) and the job runs
  // again, up to `retries` times. When a failure leaves a job with retries
  // none left, its get() throws WorkerError naming the job and its tries,
  // and the runtime is left failed as map leaves it (jobs.hpp, Futures).
  template <class F, class J> auto apply_async(F fn, const J& job, int retries = 0);
  // Queues every job; one future per job, in job order; retries as above,
  // for each job.
  template <class F, class J> auto map_async(F fn, const std::vector<J>& jobs, int retries = 0);
  // Finishes every queued job (their futures stay readable).
  void join();
  // A zero-filled shared array for jobs to write (Data::ref()); sharedmem's
  // empty / zeros (the memory of a new segment is always zero).
  Data zeros(DType dtype, Shape shape) { return data(dtype, std::move(shape)); }
  Data empty(DType dtype, Shape shape) { return data(dtype, std::move(shape)); }
  // Stable argsort of column `column` of a Data ([rows] or [rows, cols],
  // f32 or i32) over every rank: a parallel merge sort; the same order as
  // std::stable_sort with `<` (f32 NaNs last, -0.0 equal to 0.0).
  std::vector<int64_t> argsort(const Data& d, int64_t column = 0);
  // That column's values in that order.
  Array sort(const Data& d, int64_t column = 0);

  // The untyped cores of the above (synk/jobs.hpp's templates call them).
  // jobs: count jobs, job i at bytes [offsets[i], offsets[i+1]); sink(i,
  // result bytes) is called in the master as results arrive (in job order
  // when `in_order`).
  using JobSink = std::function<void(uint64_t i, std::span<const uint8_t> result)>;
  // fast: jobs of one size without offsets, their chunk runner, results
  // copied out at the end instead of through sink (jobs.hpp: JobsFast).
  void run_jobs(detail::JobThunk thunk, uint64_t fn, const uint8_t* jobs, const uint64_t* offsets, size_t count,
                size_t result_slot, bool in_order, const JobSink& sink, const char* what,
                const detail::JobsFast& fast = {}, int retries = 0);
  // One async job; `what` names the caller (apply_async, map_async).
  std::shared_ptr<detail::JobBatch> submit(detail::JobThunk thunk, uint64_t fn, const uint8_t* job, size_t job_bytes,
                                           size_t result_slot, uint64_t& index, int retries = 0,
                                           const char* what = "apply_async");

  // ---- recovery ------------------------------------------------------------------
  // The master's (rank 0's) value of every distributed shared variable, in
  // graph order. Works on a failed runtime (not after close()).
  VarValues snapshot() const;
  // Each rank's training-step phases, p50 / p90 / max over the steps so
  // far (the last 4096 per rank), and the straggler (StepStats). Always
  // kept: a step's ranks read the clock at its spans' ends, plain calls
  // not at all. Several nodes: this node's ranks.
  StepStats stats();
  // Sets each named variable to its value on every rank (all are checked
  // first: unknown names, dtypes and shapes are refused before any is set).
  // Variables not listed keep their values.
  void restore(const VarValues& values);
  // Repairs a runtime that failed because a worker died or hung: every
  // worker is replaced by a fresh process forked through the fork server,
  // which gets the master's functions, shared segments and variables
  // (optimizer state included: the master's copy is whole, see snapshot),
  // and, for NCCL ranks, a new communicator over all ranks. The rank count
  // stays; ParallelFunction and Data handles made before keep working. The
  // call that failed is not retried (it threw WorkerError and its training
  // step left the variables as before it). Does nothing on a healthy
  // runtime. Several nodes: every node's program must call heal() after the
  // failure (as every call is made on every node); each node replaces all
  // its workers, the link between the masters is renewed, and every rank
  // of every node gets the variables of node 0's master (docs/faults.md,
  // Training that heals). Throws WorkerError, leaving the runtime failed,
  // if a replacement cannot start or a node does not heal within the
  // collective timeout.
  void heal();

  // Shuts the workers down and frees the runtime's own shared segments
  // (control block, collectives, call arguments and results, gradient
  // buffers), also while ParallelFunction handles live (their calls are then
  // refused). A Data keeps its segment until its last handle goes
  // (data.hpp); the next runtime refuses it. A call running in another
  // thread is waited for, then the runtime closes; from inside a call of the
  // same thread (a map job the master runs) close() is refused
  // (ArgumentError; the destructor instead closes when that call ends); in
  // a worker process it is refused. Throws IoError if the timeline could
  // not be written (the runtime is closed all the same). Idempotent.
  void close();

  explicit Runtime(std::shared_ptr<detail::RuntimeCore> core);

 private:
  detail::RuntimeCore& checked(const char* what) const;
  std::shared_ptr<detail::RuntimeCore> impl_;
};

}  // namespace synk

#include "synk/jobs_impl.hpp"
