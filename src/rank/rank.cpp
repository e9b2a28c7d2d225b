// src/rank/rank.cpp — making, feeding and ending a rank (rank/rank.hpp).
#include "rank/rank.hpp"

#include <utility>

#include "cuda/context.hpp"
#include "trace/trace.hpp"

namespace synk::detail {

Rank::Rank(RankSetup setup) : setup_(std::move(setup)) {
  s_.rank = setup_.rank;
  s_.ranks = setup_.ranks;
  s_.bucket_bytes = setup_.bucket_bytes;
}

Rank::~Rank() { unpin_all(); }

// One device rule: CPU ranks on the CPU; CUDA ranks on their GPU, made
// current first. A function's rank_sum steps (ops.hpp) are all-reduces by
// the rank's comm, on the compute stream (the comm is made or joined before
// any function runs).
std::unique_ptr<exec::Executor> Rank::make_executor(const Graph& g) {
  const RankSetup& s = setup_;
  exec::ExecutorOptions o;
  o.device = s.device;
  o.seed = s.seed;
  o.rank = s.local;
  o.blas_threads = 1;
  if (s.device == Device::cuda) {
    o.ordinal = s.gpu;
    use_rank_device(s.local, s.gpu);
  }
  if (s.ranks > 1)
    o.rank_sum = [this](const float* in, float* out, size_t n, CUstream_st* stream) {
      if (!comm_)
        throw BackendError("rank " + std::to_string(setup_.rank) + ": rank_sum before the rank's comm was made");
      comm_->all_reduce(in, out, n, comm::ElemType::f32, ReduceOp::sum, stream);
    };
  return exec::make_executor(g, o);
}

// The comm lives as long as the process (a worker's executor is made anew
// at every distribute). Comms joined through bootstrap bytes wait for
// join_comm: a CUDA rank makes its context when it compiles, and a runtime
// that never distributes (map jobs only) should not pay for NCCL's bootstrap.
void Rank::make_comm_if_direct() {
  if (comm_ || comm::needs_bootstrap(setup_.comm.kind)) return;
  comm_ = comm::make_comm(setup_.comm);
  s_.comm = comm_.get();
}

void Rank::attach(const Graph& g) {
  ex_ = make_executor(g);
  s_.graph = &g;
  s_.ex = ex_.get();
  make_comm_if_direct();
}

void Rank::replace(std::unique_ptr<Graph> g, const std::vector<FunctionDef>& defs) {
  std::unique_ptr<exec::Executor> ex = make_executor(*g);
  RankState L;
  L.graph = g.get();
  L.ex = ex.get();
  // Variables keep their values across distributes (the graph only grows).
  if (s_.ready()) {
    std::vector<uint8_t> tmp;
    for (size_t id = 0; id < s_.graph->size(); ++id) {
      const Node& n = s_.graph->node(static_cast<int32_t>(id));
      if (n.op != Op::Variable) continue;
      const size_t nb = static_cast<size_t>(numel(n.shape)) * dtype_size(n.dtype);
      if (!nb) continue;
      tmp.resize(nb);
      s_.ex->read_variable(static_cast<int32_t>(id), tmp.data(), nb);
      L.ex->write_variable(static_cast<int32_t>(id), tmp.data(), nb);
    }
  }
  // Compiled before anything is replaced: a distribute that fails leaves
  // the rank as it was.
  for (const FunctionDef& d : defs) {
    L.defs.push_back(d);
    L.fns.push_back(L.ex->add(d));
    L.sliced.push_back(-1);
    L.rank_sum.push_back(function_runs_op(*g, d, Op::RankSum));
  }
  L.pinned = std::move(s_.pinned);  // page locks belong to the process, not the executor
  L.peer_grads = std::move(s_.peer_grads);
  L.peer_bytes = s_.peer_bytes;
  L.peer_gen = s_.peer_gen;
  L.rank = s_.rank;
  L.ranks = s_.ranks;
  L.bucket_bytes = s_.bucket_bytes;
  s_ = std::move(L);
  ex_ = std::move(ex);
  graph_ = std::move(g);
  make_comm_if_direct();
  s_.comm = comm_.get();
}

void Rank::add_functions(const std::vector<FunctionDef>& all) {
  if (!s_.ready()) throw BackendError("rank " + std::to_string(s_.rank) + ": functions before the rank's graph");
  for (size_t i = s_.defs.size(); i < all.size(); ++i) {
    const int fn = s_.ex->add(all[i]);
    s_.defs.push_back(all[i]);
    s_.fns.push_back(fn);
    s_.sliced.push_back(-1);
    s_.rank_sum.push_back(function_runs_op(*s_.graph, all[i], Op::RankSum));
  }
}

void Rank::drop_functions(size_t n) {
  auto cut = [n](auto& v) {
    if (v.size() > n) v.erase(v.begin() + static_cast<std::ptrdiff_t>(n), v.end());
  };
  cut(s_.defs);
  cut(s_.fns);
  cut(s_.sliced);
  cut(s_.rank_sum);
}

void Rank::join_comm(std::span<const uint8_t> bootstrap) {
  if (comm_) throw FormatError("corrupt command: rank " + std::to_string(s_.rank) + " joins its comm a second time");
  if (!s_.ready()) throw FormatError("corrupt command: rank " + std::to_string(s_.rank) + " joins its comm before distribute");
  comm_ = comm::make_comm(setup_.comm, bootstrap);
  s_.comm = comm_.get();
}

void Rank::drop_joined_comm(const std::string& why) noexcept {
  if (!comm_ || comm::bootstrap_bytes(setup_.comm.kind) == 0) return;
  comm_->abort(why);
  s_.comm = nullptr;
  comm_.reset();
}

ShareResult Rank::run_share(const CallDesc& d) { return detail::run_share(s_, d); }

void Rank::run_var_ops(const uint8_t* args, size_t n, uint8_t* out) { detail::run_var_ops(s_, args, n, out); }

void Rank::read_variable(int32_t var, void* dst, size_t nb) { s_.ex->read_variable(var, dst, nb); }

void Rank::write_variable(int32_t var, const void* src, size_t nb) { s_.ex->write_variable(var, src, nb); }

void Rank::map_peer_grads(std::vector<void*> bufs, size_t bytes, uint64_t gen) {
  s_.peer_grads = std::move(bufs);
  s_.peer_bytes = bytes;
  s_.peer_gen = gen;
}

// Data segments are page-locked the first time a rank copies rows from them
// (a CUDA rank's copies then go to the device by DMA, asynchronously), and
// unlocked before they are unmapped (release, close). A refused or
// pointless lock (the CPU) is remembered too: the copies work without it.
void pin_segment(RankState& L, uint64_t id, const void* p, size_t bytes) {
  if (id == 0 || L.pinned.count(id)) return;
  L.pinned[id] = L.ex->pin_host(p, bytes) ? p : nullptr;
}

void Rank::unpin(uint64_t seg) noexcept {
  auto it = s_.pinned.find(seg);
  if (it == s_.pinned.end()) return;
  if (it->second && s_.ex) s_.ex->unpin_host(it->second);
  s_.pinned.erase(it);
}

void Rank::unpin_all() noexcept {
  if (s_.ex)
    for (auto& [id, p] : s_.pinned)
      if (p) s_.ex->unpin_host(p);
  s_.pinned.clear();
}

void Rank::close(const std::string& why) noexcept {
  unpin_all();
  s_ = RankState{};
  if (comm_) comm_->abort(why);
  comm_.reset();
  ex_.reset();
  graph_.reset();
}

}  // namespace synk::detail
