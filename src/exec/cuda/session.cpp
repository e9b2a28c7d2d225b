// exec/cuda/session.cpp — synk::CudaSession and synk::CudaFunction: the
// GPU counterpart of session.cpp.
//
// Variables live in device memory (one buffer each, so their addresses
// never change and captured graphs stay valid). One device arena, sized to
// the largest plan, is shared by every compiled function: calls are
// sequential on one stream. A call copies its inputs into the plan's input
// slots, launches the plan's CUDA graph (captured on the first call per
// batch size, and again if the arena had to grow since), copies the outputs
// back and synchronises once. Without CUDA the class exists and its
// constructor throws.
#include "synk/config.hpp"
#include "synk/cuda_session.hpp"
#include "synk/error.hpp"

#if SYNK_HAVE_CUDA

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_map>

#include "cuda/context.hpp"
#include "cuda/stream.hpp"
#include "exec/cuda/executor.hpp"
#include "exec/common.hpp"
#include "exec/variables.hpp"
#include "shape.hpp"  // kernels/: the bad-index word

namespace synk {

void (*cuda::test_before_segment_capture)(size_t) = nullptr;

namespace {

struct FunctionState {
  FunctionDef def;
  // By (batch size (-1: none), keyed): a keyed call's plan draws its
  // dropout keys without the rank (CallKey).
  std::map<std::pair<int64_t, bool>, std::unique_ptr<cuda::CudaPlan>> plans;
};

using exec::fn_label;

constexpr unsigned long long kNoBadRow = ~0ull;

// Whether p points to device memory (inputs may be host or device memory;
// cudaMemcpyDefault copies either way, but the host must not read the latter).
bool on_device(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();  // plain pageable host memory on old runtimes
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

}  // namespace

struct CudaSession::Impl {
  const Graph* g = nullptr;
  CudaSessionOptions opts;
  // Declaration order is destruction order reversed: the stream outlives
  // the cuBLAS handle and every plan's graph.
  std::unique_ptr<cuda::Stream> stream;
  std::unique_ptr<cuda::Blas> blas;
  exec::VariableTable<cuda::DeviceBuffer> vars;  // one buffer each: addresses never change
  cuda::DeviceBuffer arena;
  uint64_t arena_gen = 0;
  cuda::DeviceBuffer counter;  // unsigned long long: this call's number (dropout), written per call
  // Calls so far, counted at the point where the CPU Session counts them
  // (after the input checks, before the label checks), so that dropout
  // masks stay equal to the CPU's after a refused call.
  uint64_t calls = 0;
  unsigned long long call_no = 0;  // host source of the counter upload
  cuda::DeviceBuffer bad_row;  // unsigned long long: first bad label row
  uint64_t captures = 0;
  std::vector<FunctionState> fns;

  cudaStream_t s() const { return stream->get(); }

  void ensure_variables() {
    auto make = [&](const Node& n, int32_t id) {
      const Array host = exec::initial_array(n, id, opts.seed);
      cuda::DeviceBuffer buf(std::max<size_t>(host.nbytes(), 4));
      if (host.nbytes() > 0)
        SYNK_CUDA_CHECK(cudaMemcpyAsync(buf.data(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice, s()));
      stream->synchronize();  // the host array goes out of scope
      return buf;
    };
    vars.scan(*g, make, [](cuda::DeviceBuffer& b) { return b.data(); });
  }

  int32_t find_variable(const std::string& name, const char* who) {
    ensure_variables();
    return vars.find(name, who);
  }

  // Grows the arena; captured graphs of the old arena are re-captured
  // before their next launch (arena_gen).
  void reserve_arena(int64_t bytes) {
    if (static_cast<size_t>(bytes) <= arena.bytes()) return;
    stream->synchronize();
    arena = cuda::DeviceBuffer();  // free first: the old and new need not fit together
    arena = cuda::DeviceBuffer(static_cast<size_t>(bytes));
    ++arena_gen;
  }

  int64_t check_inputs(const FunctionDef& def, const std::vector<ArrayView>& inputs) const;
  void check_labels(const cuda::CudaPlan& cp, const FunctionDef& def, const std::vector<ArrayView>& inputs) const;
  // Outputs to `into` (host or device pointers) when given, else returned.
  // ready (with into): outputs handed over as CudaFunction::call_into says.
  std::vector<Array> call(int index, const std::vector<ArrayView>& inputs, const std::vector<void*>* into,
                          const CallKey* dropout_key = nullptr, const std::function<void(size_t)>* ready = nullptr);
};

// The shared input rules (exec/common.hpp); returns the batch size (-1
// when no input has a batch dim).
int64_t CudaSession::Impl::check_inputs(const FunctionDef& def, const std::vector<ArrayView>& inputs) const {
  return exec::check_inputs(g->nodes(), def, inputs);
}

// Labels and embedding indices that come straight from an input are
// checked on the host before anything runs, so a bad call changes no
// variable (as on the CPU). Those computed on the device (or in device
// memory) are checked by the kernels (bad_row, CudaPlan::index_check).
void CudaSession::Impl::check_labels(const cuda::CudaPlan& cp, const FunctionDef& def,
                                     const std::vector<ArrayView>& inputs) const {
  for (const plan::Step& s : cp.p.steps) {
    const bool xent = s.op == Op::SoftmaxCrossEntropy || s.op == Op::SoftmaxCrossEntropyGrad;
    const bool emb = s.op == Op::Embedding || s.op == Op::EmbeddingGrad;
    if (!xent && !emb) continue;
    const plan::ValueLoc& l = cp.p.loc[static_cast<size_t>(s.in[1])];
    if (l.kind != plan::Loc::Input) continue;
    const ArrayView& v = inputs[static_cast<size_t>(l.index)];
    if (s.mm_m > 0 && on_device(v.data)) continue;  // checked by the kernels
    const auto* lab = static_cast<const int32_t*>(v.data);
    const std::string where = fn_label(def) + ": " + op_name(s.op) + " (node " + std::to_string(s.node) + ")";
    if (emb) {
      for (int64_t i = 0; i < s.mm_m; ++i)
        if (!shape::index_ok(lab[i], s.mm_k)) throw ArgumentError(where + ": " + exec::bad_index_message(lab[i], i, s.mm_k));
      continue;
    }
    for (int64_t i = 0; i < s.mm_m; ++i)
      if (lab[i] < 0 || lab[i] >= s.mm_n)
        throw ArgumentError(where + ": label " + std::to_string(lab[i]) + " at row " + std::to_string(i) +
                            " is outside [0, " + std::to_string(s.mm_n) + ")");
  }
}

std::vector<Array> CudaSession::Impl::call(int index, const std::vector<ArrayView>& inputs,
                                           const std::vector<void*>* into, const CallKey* dropout_key,
                                           const std::function<void(size_t)>* ready) {
  FunctionState& f = fns.at(static_cast<size_t>(index));
  const FunctionDef& def = f.def;
  const auto& nodes = g->nodes();
  const int64_t b = check_inputs(def, inputs);
  if (into && into->size() != def.outputs.size())
    throw ArgumentError(fn_label(def) + ": call_into got " + std::to_string(into->size()) + " output pointers for " +
                        std::to_string(def.outputs.size()) + " outputs");
  cuda::DeviceScope scope(opts.device);
  ensure_variables();

  // ---- plan for this batch size ----------------------------------------------------
  const std::pair<int64_t, bool> plan_key{b, dropout_key != nullptr};
  auto it = f.plans.find(plan_key);
  if (it == f.plans.end()) {
    plan::Plan plan = plan::compile(nodes, def, b, cuda::plan_options());
    auto cp = std::make_unique<cuda::CudaPlan>(
        cuda::make_cuda_plan(std::move(plan), nodes, def, opts.seed, dropout_key ? 0 : opts.rank, s()));
    it = f.plans.emplace(plan_key, std::move(cp)).first;
  }
  cuda::CudaPlan& cp = *it->second;
  if (into)
    for (size_t k = 0; k < cp.p.outputs.size(); ++k)
      if (!(*into)[k] && numel(cp.p.shapes[static_cast<size_t>(cp.p.outputs[k])]) > 0)
        throw ArgumentError(fn_label(def) + ": call_into: output buffer " + std::to_string(k) + " is null");
  // From here on the call counts, as on the CPU, where a bad label is found
  // while the call runs.
  call_no = calls++;
  if (dropout_key) call_no = dropout_key->value;  // the CPU Session's keyed call_key(base, key)
  check_labels(cp, def, inputs);
  reserve_arena(cp.arena_bytes);
  auto* base = static_cast<uint8_t*>(arena.data());
  cuda::bind(cp, base, vars.ptrs());

  cuda::ExecContext cx;
  cx.stream = s();
  cx.blas = blas.get();
  cx.arena = base;
  cx.counter = static_cast<unsigned long long*>(counter.data());
  cx.bad_row = static_cast<unsigned long long*>(bad_row.data());
  cx.function = &def.name;
  cx.sync_each_step = opts.sync_each_step;
  cx.rank_sum = &opts.rank_sum;

  try {
    // ---- the call number and the inputs into their slots ---------------------------
    SYNK_CUDA_CHECK(cudaMemcpyAsync(counter.data(), &call_no, sizeof call_no, cudaMemcpyHostToDevice, s()));
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (cp.input_offset[i] < 0) continue;  // read by no output or update
      const size_t bytes = static_cast<size_t>(inputs[i].numel()) * dtype_size(inputs[i].dtype);
      if (bytes != static_cast<size_t>(cp.input_bytes[i]))
        throw BackendError(fn_label(def) + ": input " + std::to_string(i) + " has " + std::to_string(bytes) +
                           " bytes but its device slot " + std::to_string(cp.input_bytes[i]) +
                           " (internal error: the checked input and the plan disagree)");
      if (bytes > 0)
        SYNK_CUDA_CHECK(cudaMemcpyAsync(base + cp.input_offset[i], inputs[i].data, bytes, cudaMemcpyDefault, s()));
    }

    // ---- outputs handed over while the call runs (call_into with ready) -------------
    // Those a step computes, read in place (no snapshot) and bound for
    // device memory: a copy to host memory would hold the host until the
    // stream got there, and nothing more would be queued meanwhile. The
    // steps then run in segments, each ending after a step that finishes
    // one of them (splits); the last segment also holds the tail.
    const size_t n_steps = cp.p.steps.size();
    std::vector<char> early(cp.p.outputs.size(), 0);
    std::vector<size_t> splits;
    if (ready) {
      if (cp.last_steps.size() != cp.p.outputs.size()) cp.last_steps = plan::output_last_steps(cp.p);
      for (size_t k = 0; k < cp.p.outputs.size(); ++k) {
        const int64_t at = cp.last_steps[k];
        if (at < 0 || cp.snapshot_offset[k] >= 0 || cp.p.bytes(cp.p.outputs[k]) == 0 || !on_device((*into)[k]))
          continue;
        early[k] = 1;
        if (static_cast<size_t>(at) + 1 < n_steps) splits.push_back(static_cast<size_t>(at));
      }
      std::sort(splits.begin(), splits.end());
      splits.erase(std::unique(splits.begin(), splits.end()), splits.end());
      if (splits.empty()) std::fill(early.begin(), early.end(), 0);  // all final at the end anyway
    }
    auto output_src = [&](size_t i) -> const void* {
      return cp.snapshot_offset[i] >= 0 ? base + cp.snapshot_offset[i] : cp.p.ptr[static_cast<size_t>(cp.p.outputs[i])];
    };
    // The early outputs finished by steps [first, end): copy queued, then ready().
    auto hand_over = [&](size_t first, size_t end) {
      for (size_t k = 0; k < early.size(); ++k) {
        const size_t at = static_cast<size_t>(cp.last_steps[k]);
        if (!early[k] || at < first || at >= end) continue;
        SYNK_CUDA_CHECK(cudaMemcpyAsync((*into)[k], output_src(k), static_cast<size_t>(cp.p.bytes(cp.p.outputs[k])),
                                        cudaMemcpyDeviceToDevice, s()));
        (*ready)(k);
      }
    };
    auto seg_begin = [&](size_t i) { return i == 0 ? size_t{0} : splits[i - 1] + 1; };
    auto seg_end = [&](size_t i) { return i < splits.size() ? splits[i] + 1 : n_steps; };
    // Segment i's work: its steps, and after the last one the tail.
    auto enqueue_segment = [&](size_t i) {
      cuda::enqueue_steps(cp, cx, seg_begin(i), seg_end(i));
      if (i == splits.size()) cuda::enqueue_tail(cp, nodes, cx);
    };

    // ---- the work: replayed graph(s), or enqueued directly ---------------------------
    // The first call of a plan runs eagerly: it loads kernels and lets
    // cuBLAS settle before anything is captured. Later calls capture once
    // and replay.
    const bool replay = opts.graphs && !opts.sync_each_step && cp.warm && !cp.has_rank_sum;
    if (splits.empty() && replay) {
      if (cp.exec.empty() || cp.exec_gen != arena_gen) {
        cp.exec.reset();
        cp.exec = cuda::capture(s(), [&] { cuda::enqueue(cp, nodes, cx); });
        cp.exec_gen = arena_gen;
        ++captures;
      }
      SYNK_CUDA_CHECK(cudaGraphLaunch(cp.exec.get(), s()));
    } else if (splits.empty()) {
      cuda::enqueue(cp, nodes, cx);
      cp.warm = true;
    } else if (replay) {
      if (cp.segs.empty() || cp.segs_gen != arena_gen || cp.seg_last != splits) {
        // Into a set of their own, committed with the splits and arena
        // generation they belong to only once every segment is captured: a
        // capture that throws midway leaves the plan's graphs, splits and
        // generation as they were (or empty), never a partial set that a
        // later call with the old splits would launch.
        std::vector<cuda::GraphExec> fresh;
        fresh.reserve(splits.size() + 1);
        for (size_t i = 0; i <= splits.size(); ++i)
          fresh.push_back(cuda::capture(s(), [&] {
            if (cuda::test_before_segment_capture) cuda::test_before_segment_capture(i);
            enqueue_segment(i);
          }));
        captures += fresh.size();
        cp.segs = std::move(fresh);
        cp.seg_last = splits;
        cp.segs_gen = arena_gen;
      }
      for (size_t i = 0; i <= splits.size(); ++i) {
        SYNK_CUDA_CHECK(cudaGraphLaunch(cp.segs[i].get(), s()));
        hand_over(seg_begin(i), seg_end(i));
      }
    } else {
      for (size_t i = 0; i <= splits.size(); ++i) {
        enqueue_segment(i);
        hand_over(seg_begin(i), seg_end(i));
      }
      cp.warm = true;
    }

    // ---- outputs back ----------------------------------------------------------------
    std::vector<Array> outs;
    outs.reserve(into ? 0 : cp.p.outputs.size());
    for (size_t i = 0; i < cp.p.outputs.size(); ++i) {
      const int32_t id = cp.p.outputs[i];
      const DType t = nodes[static_cast<size_t>(id)].dtype;
      const Shape& shape = cp.p.shapes[static_cast<size_t>(id)];
      if (into) {
        const size_t nb = static_cast<size_t>(numel(shape)) * dtype_size(t);
        if (nb > 0 && !early[i]) SYNK_CUDA_CHECK(cudaMemcpyAsync((*into)[i], output_src(i), nb, cudaMemcpyDefault, s()));
        continue;
      }
      Array a(t, shape);
      if (a.nbytes() > 0)
        SYNK_CUDA_CHECK(cudaMemcpyAsync(a.raw(), output_src(i), a.nbytes(), cudaMemcpyDeviceToHost, s()));
      outs.push_back(std::move(a));
    }
    unsigned long long bad = kNoBadRow;
    if (cp.has_xent)
      SYNK_CUDA_CHECK(cudaMemcpyAsync(&bad, bad_row.data(), sizeof(bad), cudaMemcpyDeviceToHost, s()));
    std::vector<unsigned long long> bad_index(cp.index_steps.size(), shape::kNoBadIndex);
    if (!bad_index.empty())
      SYNK_CUDA_CHECK(cudaMemcpyAsync(bad_index.data(), cp.index_check.data(), cp.index_check.bytes(),
                                      cudaMemcpyDeviceToHost, s()));
    stream->synchronize();
    // The first embedding step with a bad index, if any; every word is
    // reset before either error is thrown, so the next call starts clean.
    size_t bad_k = bad_index.size();
    for (size_t k = 0; k < bad_index.size() && bad_k == bad_index.size(); ++k)
      if (bad_index[k] != shape::kNoBadIndex) bad_k = k;
    if (bad_k < bad_index.size())
      SYNK_CUDA_CHECK(cudaMemsetAsync(cp.index_check.data(), 0xff, cp.index_check.bytes(), s()));
    if (bad != kNoBadRow) {
      const unsigned long long none = kNoBadRow;
      SYNK_CUDA_CHECK(cudaMemcpyAsync(bad_row.data(), &none, sizeof(none), cudaMemcpyHostToDevice, s()));
      stream->synchronize();
      throw ArgumentError(fn_label(def) + ": SoftmaxCrossEntropy on the GPU: a computed label at row " +
                          std::to_string(bad) + " is out of range (results of this call are invalid)");
    }
    if (bad_k < bad_index.size()) {
      stream->synchronize();
      const plan::Step& st = cp.p.steps[cp.index_steps[bad_k]];
      throw ArgumentError(fn_label(def) + ": " + op_name(st.op) + " (node " + std::to_string(st.node) +
                          ") on the GPU: " +
                          exec::bad_index_message(shape::bad_index_value(bad_index[bad_k]),
                                                  shape::bad_index_pos(bad_index[bad_k]), st.mm_k) +
                          " (results of this call are invalid)");
    }
    if (ready)
      for (size_t k = 0; k < early.size(); ++k)
        if (!early[k]) (*ready)(k);
    return outs;
  } catch (const ArgumentError&) {
    throw;
  } catch (const BackendError& e) {
    const std::string what = e.what();
    if (what.rfind("function '", 0) == 0) throw;
    throw BackendError(fn_label(def) + " on device " + std::to_string(opts.device) + ": " + what);
  }
}

// ---- CudaFunction ------------------------------------------------------------------------

std::vector<Array> CudaFunction::operator()(const std::vector<ArrayView>& inputs) const {
  if (!s_) throw ArgumentError("call of an empty synk::CudaFunction");
  return s_->impl_->call(index_, inputs, nullptr);
}

void CudaFunction::call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs) const {
  if (!s_) throw ArgumentError("call of an empty synk::CudaFunction");
  s_->impl_->call(index_, inputs, &outputs);
}

std::vector<Array> CudaFunction::operator()(const std::vector<ArrayView>& inputs, CallKey key) const {
  if (!s_) throw ArgumentError("call of an empty synk::CudaFunction");
  return s_->impl_->call(index_, inputs, nullptr, &key);
}

void CudaFunction::call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                             CallKey key) const {
  if (!s_) throw ArgumentError("call of an empty synk::CudaFunction");
  s_->impl_->call(index_, inputs, &outputs, &key);
}

void CudaFunction::call_into(const std::vector<ArrayView>& inputs, const std::vector<void*>& outputs,
                             const std::function<void(size_t)>& ready) const {
  if (!s_) throw ArgumentError("call of an empty synk::CudaFunction");
  s_->impl_->call(index_, inputs, &outputs, nullptr, &ready);
}

const FunctionDef& CudaFunction::def() const {
  if (!s_) throw ArgumentError("def() of an empty synk::CudaFunction");
  return s_->impl_->fns.at(static_cast<size_t>(index_)).def;
}

// ---- CudaSession ----------------------------------------------------------------------------

// Asked in a child: a process that only probed can still fork CUDA ranks.
bool CudaSession::available() noexcept {
  try {
    return cuda::probe_devices_in_child().count > 0;
  } catch (...) {  // std::bad_alloc
    return false;
  }
}

CudaSession::CudaSession(const Graph& g, CudaSessionOptions opts) : impl_(std::make_unique<Impl>()) {
  // synk::fork() refuses CUDA workers after this (runtime/runtime.cpp).
  detail::note_cuda_context();
  const cuda::DeviceProbe probe = cuda::probe_devices();
  const int count = probe.count;
  if (count == 0) throw BackendError("CudaSession (rank " + std::to_string(opts.rank) + ", device " +
                                     std::to_string(opts.device) + "): " + probe.describe());
  if (opts.device < 0 || opts.device >= count)
    throw ArgumentError("CudaSessionOptions::device = " + std::to_string(opts.device) + " but " +
                        std::to_string(count) + " CUDA device(s) are visible");
  impl_->g = &g;
  impl_->opts = opts;
  cuda::DeviceScope scope(opts.device);
  impl_->stream = std::make_unique<cuda::Stream>();
  impl_->blas = std::make_unique<cuda::Blas>(impl_->s(), opts.tf32);
  impl_->counter = cuda::DeviceBuffer(sizeof(unsigned long long));
  impl_->bad_row = cuda::DeviceBuffer(sizeof(unsigned long long));
  SYNK_CUDA_CHECK(cudaMemsetAsync(impl_->counter.data(), 0, sizeof(unsigned long long), impl_->s()));
  SYNK_CUDA_CHECK(cudaMemsetAsync(impl_->bad_row.data(), 0xff, sizeof(unsigned long long), impl_->s()));
  impl_->ensure_variables();
  impl_->stream->synchronize();
}

CudaSession::~CudaSession() {
  // Handles and memory are released on the session's device.
  int prev = -1;
  const bool have_prev = cudaGetDevice(&prev) == cudaSuccess;
  if (have_prev && prev != impl_->opts.device) (void)cudaSetDevice(impl_->opts.device);
  // A call that failed half-way may have left work queued on the stream.
  if (impl_->stream) (void)cudaStreamSynchronize(impl_->stream->get());
  impl_.reset();
  if (have_prev && prev != -1) (void)cudaSetDevice(prev);
  (void)cudaGetLastError();
}

CudaFunction CudaSession::function(const FunctionSpec& spec) {
  exec::check_spec_graph(spec, *impl_->g);
  return function(make_function_def(spec));
}

CudaFunction CudaSession::function(const FunctionDef& def) {
  validate_function_def(impl_->g->nodes(), def);
  cuda::DeviceScope scope(impl_->opts.device);
  impl_->ensure_variables();
  impl_->fns.push_back(FunctionState{def, {}});
  return CudaFunction(this, static_cast<int>(impl_->fns.size() - 1));
}

Array CudaSession::get(const std::string& name) const {
  cuda::DeviceScope scope(impl_->opts.device);
  const int32_t id = impl_->find_variable(name, "CudaSession::get");
  const Node& n = impl_->g->node(id);
  Array a(n.dtype, n.shape);
  impl_->stream->synchronize();
  if (a.nbytes() > 0)
    SYNK_CUDA_CHECK(cudaMemcpyAsync(a.raw(), impl_->vars.ptr(id), a.nbytes(),
                                    cudaMemcpyDeviceToHost, impl_->s()));
  impl_->stream->synchronize();
  return a;
}

void CudaSession::set(const std::string& name, const ArrayView& value) {
  cuda::DeviceScope scope(impl_->opts.device);
  const int32_t id = impl_->find_variable(name, "CudaSession::set");
  const size_t bytes = exec::check_set(impl_->g->node(id), name, value, "CudaSession::set");
  if (bytes == 0) return;
  impl_->stream->synchronize();
  SYNK_CUDA_CHECK(cudaMemcpyAsync(impl_->vars.ptr(id), value.data, bytes, cudaMemcpyHostToDevice,
                                  impl_->s()));
  impl_->stream->synchronize();
}

void* CudaSession::variable_data(int32_t node_id) {
  cuda::DeviceScope scope(impl_->opts.device);
  impl_->ensure_variables();
  return impl_->vars.ptr(impl_->vars.check_id(*impl_->g, node_id, "CudaSession::variable_data"));
}

const Graph& CudaSession::graph() const { return *impl_->g; }
int CudaSession::device() const { return impl_->opts.device; }
const CudaSessionOptions& CudaSession::options() const { return impl_->opts; }
size_t CudaSession::scratch_bytes() const { return impl_->arena.bytes(); }
CUstream_st* CudaSession::stream() const { return impl_->s(); }
uint64_t CudaSession::graph_captures() const { return impl_->captures; }

}  // namespace synk

#else  // !SYNK_HAVE_CUDA: the API exists, construction says why it cannot work.

namespace synk {

namespace {
[[noreturn]] void no_cuda() {
  throw BackendError("CudaSession: synk was built without CUDA (SYNK_WITH_CUDA=OFF or no toolkit found)");
}
}  // namespace

struct CudaSession::Impl {};

std::vector<Array> CudaFunction::operator()(const std::vector<ArrayView>&) const { no_cuda(); }
void CudaFunction::call_into(const std::vector<ArrayView>&, const std::vector<void*>&) const { no_cuda(); }
std::vector<Array> CudaFunction::operator()(const std::vector<ArrayView>&, CallKey) const { no_cuda(); }
void CudaFunction::call_into(const std::vector<ArrayView>&, const std::vector<void*>&, CallKey) const { no_cuda(); }
void CudaFunction::call_into(const std::vector<ArrayView>&, const std::vector<void*>&,
                             const std::function<void(size_t)>&) const {
  no_cuda();
}
const FunctionDef& CudaFunction::def() const { no_cuda(); }
bool CudaSession::available() noexcept { return false; }
CudaSession::CudaSession(const Graph&, CudaSessionOptions) { no_cuda(); }
CudaSession::~CudaSession() = default;
CudaFunction CudaSession::function(const FunctionSpec&) { no_cuda(); }
CudaFunction CudaSession::function(const FunctionDef&) { no_cuda(); }
Array CudaSession::get(const std::string&) const { no_cuda(); }
void CudaSession::set(const std::string&, const ArrayView&) { no_cuda(); }
void* CudaSession::variable_data(int32_t) { no_cuda(); }
const Graph& CudaSession::graph() const { no_cuda(); }
int CudaSession::device() const { no_cuda(); }
const CudaSessionOptions& CudaSession::options() const { no_cuda(); }
size_t CudaSession::scratch_bytes() const { no_cuda(); }
CUstream_st* CudaSession::stream() const { no_cuda(); }
uint64_t CudaSession::graph_captures() const { no_cuda(); }

}  // namespace synk

#endif  // SYNK_HAVE_CUDA
