// src/rank/share.cpp — what every rank does with its share of a call: its
// rows, its slices, and in a training step its gradients combined with every
// other rank's through its comm. Master and workers run the very same code
// on the same decoded arguments, so a call means the same everywhere.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "rank/accum.hpp"
#include "rank/rank.hpp"
#include "trace/trace.hpp"

namespace synk::detail {

namespace {

FunctionDef sliced_def(const FunctionDef& def) {
  FunctionDef d = def;
  for (const auto& [var, val] : d.updates) {
    d.outputs.push_back(val);
    d.collects.push_back(Collect::avg);
  }
  d.updates.clear();
  d.name += "/sliced";
  return d;
}

// Runs def `fn` (or its sliced form) on this rank's executor.
std::vector<Array> run_fn(RankState& L, uint32_t fn, bool use_sliced, const std::vector<ArrayView>& in,
                          const CallKey* key = nullptr) {
  if (use_sliced && L.sliced[fn] < 0) L.sliced[fn] = L.ex->add(sliced_def(L.defs[fn]));
  return L.ex->call(use_sliced ? L.sliced[fn] : L.fns[fn], in, key);
}

// A deterministic call's dropout key for the chunk whose first row is row
// `first_row` of the batch: the same on whichever rank computes the chunk.
CallKey chunk_key(const CallDesc& d, int64_t first_row) {
  return {d.call_no * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(first_row)};
}

}  // namespace

namespace {

// The command against this rank's functions (decode_call checked bounds).
void check_call(const RankState& L, const CallDesc& d) {
  if (d.fn >= L.defs.size())
    throw FormatError("runtime: corrupt call command: function index " + std::to_string(d.fn) + " of " +
                      std::to_string(L.defs.size()) + " distributed functions");
  if (d.update_fn >= 0 && static_cast<size_t>(d.update_fn) >= L.defs.size())
    throw FormatError("runtime: corrupt call command: update function index " + std::to_string(d.update_fn));
  if (d.sharded()) {
    // The sharded optimizer's layout: f32 params whose flat order fits the
    // ranks' slices, an [S] slice variable, an update def over one [S] gradient.
    auto var = [&](int32_t id) -> const Node& {
      if (id < 0 || static_cast<size_t>(id) >= L.graph->size() || L.graph->node(id).op != Op::Variable ||
          L.graph->node(id).dtype != DType::f32)
        throw FormatError("runtime: corrupt call command: sharded variable " + std::to_string(id));
      return L.graph->node(id);
    };
    uint64_t flat = 0;
    for (int32_t p : d.shard_params) flat += static_cast<uint64_t>(numel(var(p).shape));
    const Shape S{static_cast<Dim>(d.shard_slice)};
    const FunctionDef& ud = L.defs[static_cast<size_t>(d.update_fn)];
    if (var(d.shard_flat).shape != S || d.update_fn < 0 || flat > d.shard_slice * static_cast<uint64_t>(L.ranks) ||
        ud.inputs.size() != 1 || L.graph->node(ud.inputs[0]).shape != S)
      throw FormatError("runtime: corrupt call command: sharded optimizer layout of " + std::to_string(flat) +
                        " elements in slices of " + std::to_string(d.shard_slice));
  }
  const FunctionDef& def = L.defs[d.fn];
  if (d.inputs.size() != def.inputs.size() || d.collects.size() > def.outputs.size())
    throw FormatError("runtime: corrupt call command: " + std::to_string(d.inputs.size()) + " inputs and " +
                      std::to_string(d.collects.size()) + " outputs for function '" + def.name + "'");
  for (size_t i = 0; i < d.inputs.size(); ++i) {
    const Node& node = L.graph->node(def.inputs[i]);
    const InputDesc& in = d.inputs[i];
    bool ok = in.dtype == node.dtype && in.shape.size() == node.shape.size();
    for (size_t k = 0; ok && k < in.shape.size(); ++k) ok = node.shape[k] == synk::batch || node.shape[k] == in.shape[k];
    if (!ok || (in.scattered && node.shape[0] != synk::batch))
      throw FormatError("runtime: corrupt call command: input " + std::to_string(i) + " of '" + def.name +
                        "' does not match '" + node.name + "' " + to_string(node.shape));
  }
}

// This rank's part of a call: its rows of the batch, run in `slices`
// sequential pieces (one when nothing is scattered).
struct Share {
  bool scattered = false;
  int64_t total = -1;           // rows of the whole call
  int64_t start = 0, rows = 0;  // this rank's rows [start, start + rows) of the batch
  int64_t slices = 1;
  bool equal = true;            // every rank has the same number of rows
  // Deterministic calls: the slices are the rank's row chunks, from chunk
  // first_chunk of `chunks` (0: an ordinary call).
  int64_t chunks = 0, first_chunk = 0;
  bool ran() const { return !scattered || rows > 0; }
  // Slice s: rows [off, off + n) of the batch.
  void slice(int64_t s, int64_t& off, int64_t& n) const {
    if (chunks > 0 && scattered) {
      off = chunk_start(total, chunks, first_chunk + s);
      n = chunk_start(total, chunks, first_chunk + s + 1) - off;
      return;
    }
    int64_t s0 = 0;
    n = rows;
    if (scattered) split_rows(rows, static_cast<int>(slices), static_cast<int>(s), s0, n);
    off = start + s0;
  }
  // A slice's weight in a mean over the whole call's rows.
  double weight(int64_t n) const { return static_cast<double>(scattered ? n : 1); }
};

Share share_of(const RankState& L, const CallDesc& d) {
  Share sh;
  sh.scattered = d.total >= 0;
  sh.total = d.total;
  sh.chunks = d.chunks;
  if (sh.scattered && d.chunks > 0) {
    const RankShare r = rank_share(d.total, L.ranks, L.rank, d.chunks);
    sh.start = r.start;
    sh.rows = r.rows;
    sh.first_chunk = r.first_chunk;
    sh.slices = r.n_chunks;
    sh.equal = false;
  } else if (sh.scattered) {
    split_rows(d.total, L.ranks, L.rank, sh.start, sh.rows);
    sh.slices = std::max<int64_t>(1, std::min<int64_t>(d.num_slices, sh.rows));
    sh.equal = d.total % L.ranks == 0;
  }
  return sh;
}

// The inputs for rows [off, off + n) of the batch: broadcast inputs whole,
// scattered ones as a view of their rows (gathered into L.staging for an
// index list).
void slice_views(RankState& L, const CallDesc& d, int64_t off, int64_t n, std::vector<ArrayView>& views) {
  if (L.staging.size() < d.inputs.size()) L.staging.resize(d.inputs.size());
  views.resize(d.inputs.size());
  for (size_t i = 0; i < d.inputs.size(); ++i) {
    const InputDesc& in = d.inputs[i];
    if (!in.scattered) {
      views[i] = {in.dtype, in.shape, in.base};
      continue;
    }
    Shape sh = in.shape;
    const size_t row_bytes = static_cast<size_t>(static_numel(Shape(sh.begin() + 1, sh.end()))) * dtype_size(in.dtype);
    sh[0] = n;
    if (d.batch == Batch::Kind::indices) {
      auto& st = L.staging[i];
      if (st.size() < row_bytes * static_cast<size_t>(n)) st.resize(row_bytes * static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j)
        std::memcpy(st.data() + static_cast<size_t>(j) * row_bytes,
                    in.base + static_cast<size_t>(d.indices[off + j]) * row_bytes, row_bytes);
      views[i] = {in.dtype, sh, st.data()};
    } else {
      const int64_t first = (d.batch == Batch::Kind::range ? d.range_begin : 0) + off;
      views[i] = {in.dtype, sh, in.base + static_cast<size_t>(first) * row_bytes};
    }
  }
}

// The reported outputs of a call, combined over this rank's slices by their
// collect modes.
class Reported {
 public:
  Reported(const RankState& L, const CallDesc& d) : L_(L), d_(d) {
    for (size_t i = 0; i < d.collects.size(); ++i) acc_.emplace_back(d.chunked() ? Collect::gather : d.collects[i], i);
  }
  void add(const std::vector<Array>& outs, double w) {
    for (size_t i = 0; i < acc_.size(); ++i) {
      ArrayView v = outs[i].view();
      // Gathering an output without a batch dim stacks one value per piece
      // (rank x slice): [pieces, ...shape]. A deterministic call stacks
      // every output without a batch dim, one piece per chunk, for the
      // master to combine in chunk order.
      if ((d_.collects[i] == Collect::gather || d_.chunked()) && !has_batch(node(i).shape))
        v.shape.insert(v.shape.begin(), 1);
      acc_[i].add(v, w);
    }
  }
  std::vector<Array> finish() {
    std::vector<Array> out;
    for (size_t i = 0; i < acc_.size(); ++i) out.push_back(acc_[i].result(node(i).dtype, resolve(node(i).shape, 0)));
    return out;
  }

 private:
  const Node& node(size_t i) const { return L_.graph->node(L_.defs[d_.fn].outputs[i]); }
  const RankState& L_;
  const CallDesc& d_;
  std::vector<Accum> acc_;
};

// Runs def d.fn (its sliced form with use_sliced) on each of this rank's
// slices in turn; each slice's reported outputs go to `rep`, then all its
// outputs to each(outs, slice, rows).
template <class F>
void run_slices(RankState& L, const CallDesc& d, const Share& sh, bool use_sliced, Reported& rep, F&& each) {
  std::vector<ArrayView> views;
  for (int64_t s = 0; s < sh.slices; ++s) {
    int64_t off, n;
    sh.slice(s, off, n);
    {
      trace::Span t(trace::Kind::inputs, d.call_no, static_cast<int32_t>(d.fn));
      slice_views(L, d, off, n, views);
    }
    trace::Span t(trace::Kind::compute, d.call_no, static_cast<int32_t>(d.fn));
    const CallKey key = chunk_key(d, off);
    const std::vector<Array> outs = run_fn(L, d.fn, use_sliced, views, d.chunks > 0 ? &key : nullptr);
    t.end();
    rep.add(outs, sh.weight(n));
    each(outs, s, n);
  }
}

// A plain call: every slice runs the function; with several slices a
// function's updates are averaged over the slices by rows and applied once.
ShareResult run_plain(RankState& L, const CallDesc& d, const Share& sh) {
  ShareResult R;
  if (!sh.ran()) return R;
  const FunctionDef& def = L.defs[d.fn];
  const size_t n_out = d.collects.size();
  const bool use_sliced = sh.slices > 1 && !def.updates.empty();
  Reported rep(L, d);
  std::vector<std::vector<double>> upd(use_sliced ? def.updates.size() : 0);
  run_slices(L, d, sh, use_sliced, rep, [&](const std::vector<Array>& outs, int64_t, int64_t n) {
    for (size_t u = 0; u < upd.size(); ++u) add_weighted(upd[u], outs[n_out + u].view(), sh.weight(n));
  });
  for (size_t u = 0; u < upd.size(); ++u) {
    const int32_t var = def.updates[u].first;
    const Node& vn = L.graph->node(var);
    Array a = from_doubles(upd[u], 1.0 / static_cast<double>(sh.rows), vn.dtype, vn.shape);
    L.ex->write_variable(var, a.raw(), a.nbytes());
  }
  R.ran = true;
  R.rows = sh.scattered ? sh.rows : 1;
  R.outs = rep.finish();
  return R;
}

// The flat gradient buffer of a training step, in the executor's memory:
// gradient output i at off[i].
struct Grads {
  std::vector<size_t> off;
  size_t n = 0;
  float* flat = nullptr;
  bool peers = false;  // flat is this rank's shared buffer: Comm::all_reduce_peers
  // A sharded optimizer's slice (CallDesc::shard_slice; 0: not sharded):
  // flat holds ranks * slice elements, and rank r needs only the combined
  // [r * slice, (r + 1) * slice), so peer buffers are reduce-scattered.
  size_t slice = 0;
};

// The per-slice buffers of a training step, reused from slice to slice.
struct SliceBuffers {
  std::vector<ArrayView> views;
  std::vector<Array> outs;
  std::vector<void*> ptrs;
};

// The GPU tracks of a training step on a device rank under a trace
// (cuda::GpuMarks; nothing at all without a trace or a device). GpuSpan:
// one span on the rank's compute stream, from construction to destruction.
// GpuTracks: for the whole step, the comm marks its collectives on its own
// stream as the step's gradient all-reduce, and flush() moves every span
// into the rank's log once the step's work is done.
cuda::GpuMarks* gpu_marks(RankState& L) { return trace::on() ? L.ex->gpu_marks() : nullptr; }

class GpuSpan {
 public:
  GpuSpan(RankState& L, trace::Kind k, uint64_t call, int32_t fn) : L_(L), m_(gpu_marks(L)) {
    if (m_) m_->begin(L.ex->stream(), static_cast<uint16_t>(k), call, fn);
  }
  ~GpuSpan() {
    if (m_) m_->end(L_.ex->stream());
  }
  GpuSpan(const GpuSpan&) = delete;
  GpuSpan& operator=(const GpuSpan&) = delete;

 private:
  RankState& L_;
  cuda::GpuMarks* m_;
};

class GpuTracks {
 public:
  GpuTracks(RankState& L, const CallDesc& d) : L_(L), m_(gpu_marks(L)) {
    if (!m_) return;
    m_->comm_context(static_cast<uint16_t>(trace::Kind::all_reduce), d.call_no, static_cast<int32_t>(d.fn));
    L.comm->set_marks(m_);
  }
  ~GpuTracks() {
    if (m_) L_.comm->set_marks(nullptr);
  }
  GpuTracks(const GpuTracks&) = delete;
  GpuTracks& operator=(const GpuTracks&) = delete;
  void flush() {
    if (m_) m_->flush(L_.ex->stream(), &trace::record_gpu);
  }

 private:
  RankState& L_;
  cuda::GpuMarks* m_;
};

// Slice s of a training step's gradient function: its input rows gathered,
// its reported outputs into `rep`, gradient output gi written to
// grad_ptr(gi); a deterministic call keys its dropout by the slice's first
// row (chunk_key). Returns the slice's rows.
template <class GradPtr>
int64_t grad_slice(RankState& L, const CallDesc& d, const Share& sh, int64_t s, Reported& rep, SliceBuffers& b,
                   GradPtr&& grad_ptr, const std::function<void(size_t)>* ready = nullptr) {
  const FunctionDef& def = L.defs[d.fn];
  const size_t n_out = d.collects.size();
  int64_t off, rows;
  sh.slice(s, off, rows);
  {
    trace::Span t(trace::Kind::inputs, d.call_no, static_cast<int32_t>(d.fn));
    slice_views(L, d, off, rows, b.views);
  }
  trace::Span t(trace::Kind::compute, d.call_no, static_cast<int32_t>(d.fn));
  b.outs.clear();
  b.ptrs.clear();
  for (size_t i = 0; i < n_out; ++i) {
    const Node& node = L.graph->node(def.outputs[i]);
    b.outs.emplace_back(node.dtype, resolve(node.shape, rows));
    b.ptrs.push_back(b.outs.back().raw());
  }
  for (size_t gi = 0; gi + n_out < def.outputs.size(); ++gi) b.ptrs.push_back(grad_ptr(gi));
  const CallKey key = chunk_key(d, off);
  {
    GpuSpan gpu(L, trace::Kind::compute, d.call_no, static_cast<int32_t>(d.fn));  // the compute stream's track
    if (ready) L.ex->call_into_ready(L.fns[d.fn], b.views, b.ptrs, *ready);
    else L.ex->call_into(L.fns[d.fn], b.views, b.ptrs, d.chunks > 0 ? &key : nullptr);
  }
  t.end();
  rep.add(b.outs, sh.weight(rows));
  return rows;
}

// This rank's gradients into the flat buffer, weighted so that the
// all-reduce by grad_reduce() gives the batch mean. One slice (direct):
// the gradient function writes straight into the flat buffer, no copy and
// no per-step gradient arrays; with unequal shares the rank's mean is then
// weighted by its share of the batch. Several slices: each slice's
// gradients (a mean over its rows) go to the executor's slice scratch and
// are added into the flat buffer weighted by the slice's share of the batch.
void rank_grads(RankState& L, const CallDesc& d, const Share& sh, const Grads& g, GradPath path, Reported& rep) {
  float* const into = path == GradPath::direct
                          ? g.flat
                          : static_cast<float*>(L.ex->scratch(exec::Executor::Scratch::slice, g.n * sizeof(float)));
  SliceBuffers b;
  for (int64_t s = 0; s < sh.slices; ++s) {
    const int64_t n = grad_slice(L, d, sh, s, rep, b, [&](size_t gi) { return into + g.off[gi]; });
    const float w = static_cast<float>(static_cast<double>(n) / static_cast<double>(sh.total));
    if (path == GradPath::sliced) L.ex->scale_add(g.flat, into, g.n, w, s > 0);
    else if (!sh.equal) L.ex->scale_add(g.flat, g.flat, g.n, w, false);
  }
}

// All-reduces n gradient elements at p (inside the flat buffer g.flat):
// in place across the ranks' shared gradient buffers where they exist
// (CPU ranks of one node, RankState::peer_grads), else by the rank's comm.
void reduce_grads(RankState& L, const Grads& g, float* p, size_t n, ReduceOp op) {
  if (g.peers && g.slice) {
    L.comm->reduce_scatter_peers(L.peer_grads.data(), static_cast<size_t>(p - g.flat), n, g.slice, comm::ElemType::f32, op);
    return;
  }
  if (g.peers) {
    L.comm->all_reduce_peers(L.peer_grads.data(), static_cast<size_t>(p - g.flat), n, comm::ElemType::f32, op);
    return;
  }
  L.comm->all_reduce(p, p, n, comm::ElemType::f32, op, L.ex->stream());
}

// The gradient all-reduce in buckets, overlapped with the backward pass
// (RuntimeOptions::bucket_bytes; a direct-path step): the gradient
// tensors, last parameter first (the order backward produces them in), are
// grouped into buckets of at least bucket_bytes, and bucket b is
// all-reduced as soon as its tensors are final and buckets 0..b-1 went,
// from inside the gradient function (Executor::call_into_ready), while
// the layers before it are still differentiated. Every rank issues the
// same buckets in the same order (a rank without rows all of them after
// zeroing), so the collectives pair up; each element is reduced exactly as
// by one all-reduce of the whole buffer, so the results are the same bits.
// Why it pays on CPU ranks too: a bucket is reduced while it is still in
// cache, instead of the whole gradient buffer read back from memory after
// backward. On NCCL ranks the CUDA call hands each gradient over once the
// step that finishes it is queued (CudaFunction::call_into with ready: the
// call runs in segments) and the bucket's all-reduce runs on the comm's
// side stream (Comm::begin_overlap) while the rest of backward runs on the
// compute stream.
class Buckets {
 public:
  Buckets(RankState& L, const CallDesc& d, const Share& sh, const Grads& g, ReduceOp op, size_t bucket_bytes)
      : L_(L), d_(d), g_(g), op_(op), w_(static_cast<float>(static_cast<double>(sh.rows) / static_cast<double>(sh.total))),
        scale_(!sh.equal && sh.ran()) {
    const size_t n = g.off.size();
    for (size_t gi = 0; gi < n; ++gi) len_.push_back((gi + 1 < n ? g.off[gi + 1] : g.n) - g.off[gi]);
    size_t bytes = 0;
    for (size_t k = n; k-- > 0;) {
      if (buckets_.empty() || bytes >= bucket_bytes) {
        buckets_.emplace_back();
        bytes = 0;
      }
      buckets_.back().push_back(k);
      bytes += len_[k] * sizeof(float);
    }
    bucket_of_.resize(n);
    missing_.resize(buckets_.size());
    for (size_t b = 0; b < buckets_.size(); ++b) {
      missing_[b] = buckets_[b].size();
      for (size_t gi : buckets_[b]) bucket_of_[gi] = b;
    }
    // A device comm (NCCL) leaves the compute stream free while a bucket
    // is reduced: backward goes on beside it, the update waits (finish).
    L_.comm->begin_overlap(L_.ex->stream());
  }
  ~Buckets() {
    try {
      L_.comm->end_overlap();
    } catch (...) {  // an aborted comm: the step already failed
    }
  }
  Buckets(const Buckets&) = delete;
  Buckets& operator=(const Buckets&) = delete;
  // Gradient gi is final: send what is complete, in bucket order.
  void ready(size_t gi) {
    --missing_[bucket_of_[gi]];
    while (next_ < buckets_.size() && missing_[next_] == 0) send(next_++);
  }
  // After the function (or for a rank without rows): every bucket not sent yet.
  // The compute stream's later work (the update) then runs after all of them.
  void finish() {
    while (next_ < buckets_.size()) send(next_++);
    L_.comm->end_overlap();
  }

 private:
  void send(size_t b) {
    trace::Span span(trace::Kind::all_reduce, d_.call_no, static_cast<int32_t>(d_.fn));
    trace::set_detail(static_cast<int64_t>(b));
    // The bucket's tensors are adjacent in the flat buffer (consecutive
    // parameters): one collective per run of adjacent tensors.
    std::vector<size_t> gis = buckets_[b];
    std::sort(gis.begin(), gis.end());
    for (size_t i = 0; i < gis.size();) {
      size_t j = i + 1;
      while (j < gis.size() && gis[j] == gis[j - 1] + 1) ++j;
      float* p = g_.flat + g_.off[gis[i]];
      const size_t n = g_.off[gis[j - 1]] + len_[gis[j - 1]] - g_.off[gis[i]];
      if (scale_) L_.ex->scale_add(p, p, n, w_, false);
      reduce_grads(L_, g_, p, n, op_);
      i = j;
    }
  }
  RankState& L_;
  const CallDesc& d_;
  const Grads& g_;
  ReduceOp op_;
  float w_;
  bool scale_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<size_t> bucket_of_, missing_;
  size_t next_ = 0;
  std::vector<size_t> len_;  // elements of each gradient tensor
};

// A deterministic training step (CallDesc::chunks). The combined gradient
// is, element by element, the sum over chunks in chunk order of each
// chunk's mean gradient weighted by its share of the batch, from +0
// (Executor::weighted_sum): the same bits whatever the rank count, since
// every chunk's gradient is (its rows, its dropout key, its shapes). The
// gradient tensors are split into one range per rank (at tensor
// boundaries, about G / ranks elements each); each chunk's gradients are
// written straight into per-range blocks, rank q gathers every chunk's
// block of range q (a gatherv: each rank's chunks are consecutive chunks),
// sums it into its range of the flat buffer, and broadcasts that range. A
// rank so receives its range of the other ranks' chunks and the others'
// sums, not every chunk whole, and nothing is copied to be sent. A call
// without scattered inputs is computed whole by every rank with the same
// key: there is nothing to combine.
void chunked_grads(RankState& L, const CallDesc& d, const Share& sh, const Grads& g, Reported& rep) {
  using Scratch = exec::Executor::Scratch;
  exec::Executor& ex = *L.ex;
  const FunctionDef& def = L.defs[d.fn];
  const size_t n_out = d.collects.size();
  const size_t G = g.n, n_grads = g.off.size();
  const int n = sh.scattered ? L.ranks : 1;
  const int64_t K = sh.scattered ? sh.chunks : 1;
  const size_t kc = static_cast<size_t>(sh.slices);
  // Range q: gradient elements [bound[q], bound[q + 1]), whole tensors.
  std::vector<size_t> bound(static_cast<size_t>(n) + 1, G);
  bound[0] = 0;
  for (int q = 1; q < n; ++q) {
    const size_t target = G * static_cast<size_t>(q) / static_cast<size_t>(n);
    size_t at = bound[static_cast<size_t>(q) - 1];
    for (size_t gi = 0; gi < n_grads && at < target; ++gi)
      if (g.off[gi] >= at) at = g.off[gi] + static_cast<size_t>(numel(L.graph->node(def.outputs[n_out + gi]).shape));
    bound[static_cast<size_t>(q)] = std::min(at, G);
  }
  // This rank's chunks: range q's block at blocks + kc * bound[q], chunk j's
  // part of it at + j * (range length). One rank without scattered inputs
  // writes the flat buffer itself.
  float* const blocks = !sh.scattered ? g.flat
                                      : static_cast<float*>(ex.scratch(Scratch::slice, std::max<size_t>(kc * G, 1) * sizeof(float)));
  auto block = [&](int q, size_t j) {
    const size_t b = bound[static_cast<size_t>(q)], len = bound[static_cast<size_t>(q) + 1] - b;
    return blocks + kc * b + j * len;
  };
  SliceBuffers buf;
  for (int64_t s = 0; s < sh.slices; ++s)
    grad_slice(L, d, sh, s, rep, buf, [&](size_t gi) {
      int q = 0;
      while (q + 1 < n && g.off[gi] >= bound[static_cast<size_t>(q) + 1]) ++q;
      return block(q, static_cast<size_t>(s)) + (g.off[gi] - bound[static_cast<size_t>(q)]);
    });
  if (!sh.scattered) return;
  std::vector<float> w(static_cast<size_t>(K));
  for (int64_t c = 0; c < K; ++c)
    w[static_cast<size_t>(c)] = static_cast<float>(
        static_cast<double>(chunk_start(sh.total, K, c + 1) - chunk_start(sh.total, K, c)) / static_cast<double>(sh.total));
  if (n == 1) {
    ex.weighted_sum(g.flat, blocks, G, w);
    return;
  }
  trace::Span reduce(trace::Kind::all_reduce, d.call_no, static_cast<int32_t>(d.fn));
  std::vector<size_t> rank_chunks(static_cast<size_t>(n)), counts(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r)
    rank_chunks[static_cast<size_t>(r)] = static_cast<size_t>(rank_share(sh.total, n, r, static_cast<uint32_t>(K)).n_chunks);
  const size_t me = static_cast<size_t>(L.rank);
  float* const recv = static_cast<float*>(
      ex.scratch(Scratch::chunks, std::max<size_t>(static_cast<size_t>(K) * (bound[me + 1] - bound[me]), 1) * sizeof(float)));
  for (int q = 0; q < n; ++q) {
    const size_t len = bound[static_cast<size_t>(q) + 1] - bound[static_cast<size_t>(q)];
    for (int r = 0; r < n; ++r) counts[static_cast<size_t>(r)] = rank_chunks[static_cast<size_t>(r)] * len;
    L.comm->gatherv(block(q, 0), q == L.rank ? recv : nullptr, counts, comm::ElemType::f32, q, ex.stream());
  }
  // recv: every chunk's block of this rank's range, chunk after chunk.
  ex.weighted_sum(g.flat + bound[me], recv, bound[me + 1] - bound[me], w);
  for (int q = 0; q < n; ++q)
    L.comm->broadcast(g.flat + bound[static_cast<size_t>(q)], bound[static_cast<size_t>(q) + 1] - bound[static_cast<size_t>(q)],
                      comm::ElemType::f32, q, ex.stream());
  L.comm->wait();
}

// The update of a sharded optimizer (TrainSpec::shard_optimizer), once
// the flat buffer holds the combined gradient of this rank's slice [lo, lo
// + S): the slice of the params (a flat [S] copy in the slice variable,
// taken afresh each step so that set/restore of a param is seen), the
// update def over it and the gradient's slice (the optimizer state is the
// slice's), then every rank's updated slice all-gathered into the flat
// buffer (its gradients are spent) and copied out into the params. The
// copies are scale_add by 1, exact, in the rank's memory.
void sharded_update(RankState& L, const CallDesc& d, const Grads& g) {
  exec::Executor& ex = *L.ex;
  const size_t S = g.slice, lo = static_cast<size_t>(L.rank) * S, hi = lo + S;
  float* const slice = static_cast<float*>(ex.variable_storage(d.shard_flat));
  {
    trace::Span update(trace::Kind::update, d.call_no, d.update_fn);
    GpuSpan gpu_update(L, trace::Kind::update, d.call_no, d.update_fn);
    size_t off = 0;
    for (int32_t p : d.shard_params) {
      const size_t n = static_cast<size_t>(numel(L.graph->node(p).shape));
      const size_t a = std::max(off, lo), b = std::min(off + n, hi);
      if (a < b) ex.scale_add(slice + (a - lo), static_cast<const float*>(ex.variable_storage(p)) + (a - off), b - a, 1.f, false);
      off += n;
    }
    if (off < hi) ex.zero(slice + (std::max(off, lo) - lo), (hi - std::max(off, lo)) * sizeof(float));
    run_fn(L, static_cast<uint32_t>(d.update_fn), false, {{DType::f32, Shape{static_cast<Dim>(S)}, g.flat + lo}});
  }
  trace::Span gather(trace::Kind::all_reduce, d.call_no, d.update_fn);
  if (g.peers) {
    // CPU ranks of one node: each rank's updated slice goes into its own
    // shared buffer, and every rank copies every slice from where it lies
    // straight into its params (no staging through the group's slots).
    ex.scale_add(g.flat + lo, slice, S, 1.f, false);
    L.comm->barrier_peers();
    size_t off = 0;
    for (int32_t p : d.shard_params) {
      const size_t n = static_cast<size_t>(numel(L.graph->node(p).shape));
      float* const to = static_cast<float*>(ex.variable_storage(p));
      for (size_t a = off; a < off + n;) {
        const size_t q = a / S, b = std::min(off + n, (q + 1) * S);
        ex.scale_add(to + (a - off), static_cast<const float*>(L.peer_grads[q]) + a, b - a, 1.f, false);
        a = b;
      }
      off += n;
    }
    // Nobody writes its buffer again (the next step's gradients) before
    // every rank has read its slice.
    L.comm->barrier_peers();
    return;
  }
  L.comm->all_gather(slice, g.flat, S, comm::ElemType::f32, ex.stream());
  size_t off = 0;
  for (int32_t p : d.shard_params) {
    const size_t n = static_cast<size_t>(numel(L.graph->node(p).shape));
    ex.scale_add(static_cast<float*>(ex.variable_storage(p)), g.flat + off, n, 1.f, false);
    off += n;
  }
}

// A training step: this rank's gradients into the flat buffer (by the
// step's GradPath), ONE all-reduce of it by the rank's comm, then the
// update function on the combined gradients.
ShareResult run_train(RankState& L, const CallDesc& d, const Share& sh) {
  if (!L.comm) throw BackendError("training step before the rank's comm was made");
  trace::StepTimer step_timer(trace::g_steps);  // the step's phases (Runtime::stats)
  const FunctionDef& def = L.defs[d.fn];
  const size_t n_out = d.collects.size();
  Grads g;
  for (size_t i = n_out; i < def.outputs.size(); ++i) {
    g.off.push_back(g.n);
    g.n += static_cast<size_t>(numel(L.graph->node(def.outputs[i]).shape));
  }
  g.slice = static_cast<size_t>(d.shard_slice);
  // Sharded: every rank's slice, the padding after the params included.
  const size_t whole = d.sharded() ? g.slice * static_cast<size_t>(L.ranks) : g.n;
  // This rank's buffer in shared memory where the master made them (CPU
  // ranks of one node), else the executor's scratch.
  if (L.comm->reduces_peer_buffers() && !L.peer_grads.empty() && L.peer_bytes >= whole * sizeof(float) &&
      static_cast<size_t>(L.rank) < L.peer_grads.size()) {
    g.flat = static_cast<float*>(L.peer_grads[static_cast<size_t>(L.rank)]);
    g.peers = true;
  } else {
    g.flat = static_cast<float*>(L.ex->scratch(exec::Executor::Scratch::grads, whole * sizeof(float)));
  }
  // The padding's gradient is 0, so its parameters and state stay 0.
  if (whole > g.n) L.ex->zero(g.flat + g.n, (whole - g.n) * sizeof(float));
  const GradPath path = grad_path(sh.total, d.num_slices, sh.rows);
  ShareResult R;
  Reported rep(L, d);
  GpuTracks gpu(L, d);
  if (d.chunks > 0) {
    chunked_grads(L, d, sh, g, rep);
    if (sh.ran()) {
      R.ran = true;
      R.rows = sh.scattered ? sh.rows : 1;
      R.outs = rep.finish();
    }
  } else if (L.bucket_bytes > 0 && path == GradPath::direct && !g.off.empty() && !L.rank_sum[d.fn]) {
    // Buckets all-reduced during the backward pass (the choice depends on
    // the call alone: every rank takes it).
    Buckets buckets(L, d, sh, g, grad_reduce(path, sh.total, L.ranks, sh.rows), L.bucket_bytes);
    if (!sh.ran()) {
      L.ex->zero(g.flat, g.n * sizeof(float));
    } else {
      const size_t n_out = d.collects.size();
      const std::function<void(size_t)> ready = [&](size_t k) {
        if (k >= n_out) buckets.ready(k - n_out);
      };
      SliceBuffers b;
      grad_slice(L, d, sh, 0, rep, b, [&](size_t gi) { return g.flat + g.off[gi]; }, &ready);
      R.ran = true;
      R.rows = sh.scattered ? sh.rows : 1;
      R.outs = rep.finish();
    }
    buckets.finish();
    L.comm->wait();
  } else {
    if (!sh.ran()) {
      L.ex->zero(g.flat, g.n * sizeof(float));  // a rank with no rows adds nothing
    } else {
      rank_grads(L, d, sh, g, path, rep);
      R.ran = true;
      R.rows = sh.scattered ? sh.rows : 1;
      R.outs = rep.finish();
    }
    trace::Span reduce(trace::Kind::all_reduce, d.call_no, static_cast<int32_t>(d.fn));
    const ReduceOp op = grad_reduce(path, sh.total, L.ranks, sh.rows);
    if (!d.sharded()) reduce_grads(L, g, g.flat, g.n, op);
    else if (g.peers) reduce_grads(L, g, g.flat, whole, op);
    else L.comm->reduce_scatter(g.flat, g.flat + static_cast<size_t>(L.rank) * g.slice, g.slice, comm::ElemType::f32, op, L.ex->stream());
    // The watchdog: a failed or missing peer raises here instead of hanging
    // the update's synchronisation.
    L.comm->wait();
  }
  if (d.sharded()) {
    sharded_update(L, d, g);
    gpu.flush();
    return R;
  }
  trace::Span update(trace::Kind::update, d.call_no, d.update_fn);
  const FunctionDef& ud = L.defs[static_cast<size_t>(d.update_fn)];
  std::vector<ArrayView> gv;
  for (size_t gi = 0; gi < ud.inputs.size(); ++gi) {
    const Node& gn = L.graph->node(ud.inputs[gi]);
    gv.push_back({DType::f32, gn.shape, g.flat + g.off.at(gi)});
  }
  {
    GpuSpan gpu_update(L, trace::Kind::update, d.call_no, d.update_fn);
    run_fn(L, static_cast<uint32_t>(d.update_fn), false, gv);
  }
  update.end();
  gpu.flush();  // waits for the step's device work: a trace's cost on device ranks
  return R;
}

}  // namespace

GradPath grad_path(int64_t total, uint32_t num_slices, int64_t rows) {
  const bool one_slice = total < 0 || std::min<int64_t>(num_slices, rows) <= 1;
  return one_slice ? GradPath::direct : GradPath::sliced;
}

ReduceOp grad_reduce(GradPath path, int64_t total, int ranks, int64_t rows) {
  // Equal shares in one slice: every rank's gradient is a mean over the same
  // number of rows, so they are averaged; otherwise they were weighted by
  // rows and are summed. Every rank decides alike: an equal split gives
  // every rank rows, or (an empty batch) none.
  const bool scattered = total >= 0;
  const bool equal = !scattered || total % ranks == 0;
  const bool ran = !scattered || rows > 0;
  return path == GradPath::direct && equal && ran ? ReduceOp::avg : ReduceOp::sum;
}

ShareResult run_share(RankState& L, const CallDesc& d) {
  trace::Span span(trace::Kind::share, d.call_no, static_cast<int32_t>(d.fn));
  check_call(L, d);
  // Ranks on a device copy rows straight from the Data segments: lock them once.
  for (const InputDesc& in : d.inputs)
    if (in.seg != 0) pin_segment(L, in.seg, in.base, in.seg_bytes);
  const Share sh = share_of(L, d);
  return d.update_fn >= 0 ? run_train(L, d, sh) : run_plain(L, d, sh);
}


}  // namespace synk::detail
