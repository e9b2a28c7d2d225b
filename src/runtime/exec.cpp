// src/runtime/exec.cpp — what every rank does with its share of a call, and
// how the master combines the shares. Master and workers run the very same
// code on the same decoded arguments, so a call means the same everywhere.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/core.hpp"

namespace synk::detail {

const char* cmd_name(Cmd c) {
  switch (c) {
    case Cmd::none: return "none";
    case Cmd::stop: return "stop";
    case Cmd::sync: return "sync";
    case Cmd::distribute: return "distribute";
    case Cmd::call: return "call";
    case Cmd::collective: return "collective";
    case Cmd::var_get: return "get";
    case Cmd::var_set: return "set";
    case Cmd::map: return "map";
    case Cmd::comm_init: return "comm_init";
    case Cmd::jobs: return "jobs";
  }
  return "?";
}



// ---- elementwise accumulation -------------------------------------------------------

namespace {

template <class T> void fold(T* acc, const T* v, int64_t n, Collect c) {
  switch (c) {
    case Collect::sum: for (int64_t i = 0; i < n; ++i) acc[i] = static_cast<T>(acc[i] + v[i]); break;
    case Collect::prod: for (int64_t i = 0; i < n; ++i) acc[i] = static_cast<T>(acc[i] * v[i]); break;
    case Collect::max: for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], v[i]); break;
    case Collect::min: for (int64_t i = 0; i < n; ++i) acc[i] = std::min(acc[i], v[i]); break;
    default: break;
  }
}

void fold(Array& acc, const ArrayView& v, Collect c) {
  if (acc.dtype() == DType::f32)
    fold(acc.data<float>(), static_cast<const float*>(v.data), acc.numel(), c);
  else
    fold(acc.data<int32_t>(), static_cast<const int32_t*>(v.data), acc.numel(), c);
}

void add_weighted(std::vector<double>& acc, const ArrayView& v, double w) {
  acc.resize(static_cast<size_t>(v.numel()), 0.0);
  if (v.dtype == DType::f32) {
    const float* p = static_cast<const float*>(v.data);
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += w * p[i];
  } else {
    const int32_t* p = static_cast<const int32_t*>(v.data);
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += w * p[i];
  }
}

Array from_doubles(const std::vector<double>& acc, double scale, DType t, const Shape& s) {
  Array a(t, s);
  if (t == DType::f32) {
    float* p = a.data<float>();
    for (size_t i = 0; i < acc.size(); ++i) p[i] = static_cast<float>(acc[i] * scale);
  } else {
    int32_t* p = a.data<int32_t>();
    for (size_t i = 0; i < acc.size(); ++i) p[i] = static_cast<int32_t>(std::lround(acc[i] * scale));
  }
  return a;
}

Array copy_of(const ArrayView& v) {
  Array a(v.dtype, v.shape);
  if (a.nbytes()) std::memcpy(a.raw(), v.data, a.nbytes());
  return a;
}

Array concat_rows(const std::vector<ArrayView>& parts, DType t, const Shape& like) {
  int64_t rows = 0;
  for (const auto& p : parts) rows += p.shape.empty() ? 1 : p.shape[0];
  Shape s = like;
  if (s.empty()) s = {rows};
  else s[0] = rows;
  Array a(t, s);
  auto* out = static_cast<uint8_t*>(a.raw());
  for (const auto& p : parts) {
    const size_t nb = static_cast<size_t>(p.numel()) * dtype_size(p.dtype);
    if (nb) std::memcpy(out, p.data, nb);
    out += nb;
  }
  return a;
}

// Combines a sequence of (weight, value) pairs by one collect mode.
class Accum {
 public:
  Accum(Collect c, size_t output) : c_(c), output_(output) {}
  void add(const ArrayView& v, double weight) {
    if (c_ == Collect::gather) {
      keep_.push_back(copy_of(v));
      return;
    }
    if (seen_ && v.shape != shape_)
      throw ShapeError("output " + std::to_string(output_) + ": shapes differ between parts (" + to_string(shape_) +
                       " vs " + to_string(v.shape) + "); only Collect::gather combines outputs with a batch dim");
    if (!seen_) {
      shape_ = v.shape;
      dtype_ = v.dtype;
    }
    if (c_ == Collect::avg) {
      add_weighted(sum_, v, weight);
      wsum_ += weight;
    } else if (c_ == Collect::none) {
      if (!seen_) first_ = copy_of(v);
    } else if (!seen_) {
      first_ = copy_of(v);
    } else {
      fold(first_, v, c_);
    }
    seen_ = true;
  }
  // Like add, for views that stay valid until result().
  void add_view(const ArrayView& v, double weight) {
    if (c_ == Collect::gather) {
      views_.push_back(v);
      dtype_ = v.dtype;
      shape_ = v.shape;
      seen_ = true;
      return;
    }
    add(v, weight);
  }
  bool empty() const { return !seen_ && keep_.empty(); }
  Array result(DType t, const Shape& empty_shape) {
    if (c_ == Collect::gather) {
      std::vector<ArrayView> parts = views_;
      for (const Array& a : keep_) parts.push_back(a.view());
      if (parts.empty()) return Array(t, empty_shape);
      return concat_rows(parts, parts[0].dtype, parts[0].shape);
    }
    if (!seen_) return Array(t, empty_shape);
    if (c_ == Collect::avg) return from_doubles(sum_, wsum_ > 0 ? 1.0 / wsum_ : 0.0, dtype_, shape_);
    return std::move(first_);
  }

 private:
  Collect c_;
  size_t output_;
  bool seen_ = false;
  DType dtype_ = DType::f32;
  Shape shape_;
  std::vector<double> sum_;
  double wsum_ = 0;
  Array first_;
  std::vector<Array> keep_;
  std::vector<ArrayView> views_;
};


}  // namespace

// ---- Local -----------------------------------------------------------------------------

std::unique_ptr<exec::Executor> make_rank_executor(const Graph& g, const RuntimeCore& c, int rank) {
  exec::ExecutorOptions o{.seed = c.opts.seed, .rank = rank, .blas_threads = 1};
  if (c.cuda) {
    o.device = exec::Device::cuda;
    o.ordinal = rank % c.gpus;  // host-staged ranks may share GPUs
    use_rank_device(rank, o.ordinal);
  }
  return exec::make_executor(g, o);
}

void Local::add_defs(const std::vector<FunctionDef>& all) {
  for (size_t i = defs.size(); i < all.size(); ++i) {
    defs.push_back(all[i]);
    fns.push_back(ex->add(all[i]));
    sliced.push_back(-1);
  }
}

void Local::drop_defs(size_t n) {
  auto cut = [n](auto& v) {
    if (v.size() > n) v.erase(v.begin() + static_cast<std::ptrdiff_t>(n), v.end());
  };
  cut(defs);
  cut(fns);
  cut(sliced);
}

// Data segments are page-locked the first time a rank copies rows from them
// (a CUDA rank's copies then go to the device by DMA, asynchronously), and
// unlocked before they are unmapped (release, close). A refused or
// pointless lock (the CPU) is remembered too: the copies work without it.
void pin_segment(Local& L, uint64_t id, const void* p, size_t bytes) {
  if (id == 0 || L.pinned.count(id)) return;
  L.pinned[id] = L.ex->pin_host(p, bytes) ? p : nullptr;
}

void unpin_segment(Local& L, uint64_t id) noexcept {
  auto it = L.pinned.find(id);
  if (it == L.pinned.end()) return;
  if (it->second) L.ex->unpin_host(it->second);
  L.pinned.erase(it);
}

void unpin_all(Local& L) noexcept {
  for (auto& [id, p] : L.pinned)
    if (p) L.ex->unpin_host(p);
  L.pinned.clear();
}

void var_read(Local& L, int32_t var, void* dst, size_t nb) { L.ex->read_variable(var, dst, nb); }

void var_write(Local& L, int32_t var, const void* src, size_t nb) { L.ex->write_variable(var, src, nb); }

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
std::vector<Array> run_fn(Local& L, uint32_t fn, bool use_sliced, const std::vector<ArrayView>& in) {
  if (use_sliced && L.sliced[fn] < 0) L.sliced[fn] = L.ex->add(sliced_def(L.defs[fn]));
  return L.ex->call(use_sliced ? L.sliced[fn] : L.fns[fn], in);
}

}  // namespace

namespace {

// The command against this rank's functions (decode_call checked bounds).
void check_call(const Local& L, const CallDesc& d) {
  if (d.fn >= L.defs.size())
    throw FormatError("runtime: corrupt call command: function index " + std::to_string(d.fn) + " of " +
                      std::to_string(L.defs.size()) + " distributed functions");
  if (d.update_fn >= 0 && static_cast<size_t>(d.update_fn) >= L.defs.size())
    throw FormatError("runtime: corrupt call command: update function index " + std::to_string(d.update_fn));
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
  bool ran() const { return !scattered || rows > 0; }
  // Slice s: rows [off, off + n) of the batch.
  void slice(int64_t s, int64_t& off, int64_t& n) const {
    int64_t s0 = 0;
    n = rows;
    if (scattered) split_rows(rows, static_cast<int>(slices), static_cast<int>(s), s0, n);
    off = start + s0;
  }
  // A slice's weight in a mean over the whole call's rows.
  double weight(int64_t n) const { return static_cast<double>(scattered ? n : 1); }
};

Share share_of(const Local& L, const CallDesc& d) {
  Share sh;
  sh.scattered = d.total >= 0;
  sh.total = d.total;
  if (sh.scattered) {
    split_rows(d.total, L.ranks, L.rank, sh.start, sh.rows);
    sh.slices = std::max<int64_t>(1, std::min<int64_t>(d.num_slices, sh.rows));
    sh.equal = d.total % L.ranks == 0;
  }
  return sh;
}

// The inputs for rows [off, off + n) of the batch: broadcast inputs whole,
// scattered ones as a view of their rows (gathered into L.staging for an
// index list).
void slice_views(Local& L, const CallDesc& d, int64_t off, int64_t n, std::vector<ArrayView>& views) {
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
  Reported(const Local& L, const CallDesc& d) : L_(L), d_(d) {
    for (size_t i = 0; i < d.collects.size(); ++i) acc_.emplace_back(d.collects[i], i);
  }
  void add(const std::vector<Array>& outs, double w) {
    for (size_t i = 0; i < acc_.size(); ++i) {
      ArrayView v = outs[i].view();
      // Gathering an output without a batch dim stacks one value per piece
      // (rank x slice): [pieces, ...shape].
      if (d_.collects[i] == Collect::gather && !has_batch(node(i).shape)) v.shape.insert(v.shape.begin(), 1);
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
  const Local& L_;
  const CallDesc& d_;
  std::vector<Accum> acc_;
};

// Runs def d.fn (its sliced form with use_sliced) on each of this rank's
// slices in turn; each slice's reported outputs go to `rep`, then all its
// outputs to each(outs, slice, rows).
template <class F>
void run_slices(Local& L, const CallDesc& d, const Share& sh, bool use_sliced, Reported& rep, F&& each) {
  std::vector<ArrayView> views;
  for (int64_t s = 0; s < sh.slices; ++s) {
    int64_t off, n;
    sh.slice(s, off, n);
    slice_views(L, d, off, n, views);
    const std::vector<Array> outs = run_fn(L, d.fn, use_sliced, views);
    rep.add(outs, sh.weight(n));
    each(outs, s, n);
  }
}

// A plain call: every slice runs the function; with several slices a
// function's updates are averaged over the slices by rows and applied once.
ShareResult run_plain(Local& L, const CallDesc& d, const Share& sh) {
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
    var_write(L, var, a.raw(), a.nbytes());
  }
  R.ran = true;
  R.rows = sh.scattered ? sh.rows : 1;
  R.outs = rep.finish();
  return R;
}

// The flat gradient buffer of a training step: gradient output i at off[i].
struct Grads {
  std::vector<size_t> off;
  size_t n = 0;
  float* flat = nullptr;
};

// Device and direct paths: one slice computes the gradients straight into
// the flat buffer (host memory, or the executor's device memory on the
// device path), no copy and no per-step gradient arrays. On the host with
// unequal shares each rank's mean gradient is weighted by its share of the
// batch, so the sum over ranks is the exact batch mean.
void grads_in_one_slice(Local& L, const CallDesc& d, const Share& sh, const Grads& g, GradPath path, Reported& rep) {
  const FunctionDef& def = L.defs[d.fn];
  const size_t n_out = d.collects.size();
  int64_t off, n;
  sh.slice(0, off, n);
  std::vector<ArrayView> views;
  slice_views(L, d, off, n, views);
  std::vector<Array> outs;
  std::vector<void*> ptrs;
  for (size_t i = 0; i < n_out; ++i) {
    const Node& node = L.graph->node(def.outputs[i]);
    outs.emplace_back(node.dtype, resolve(node.shape, n));
    ptrs.push_back(outs.back().raw());
  }
  for (size_t gi = 0; gi + n_out < def.outputs.size(); ++gi) ptrs.push_back(g.flat + g.off[gi]);
  L.ex->call_into(L.fns[d.fn], views, ptrs);
  rep.add(outs, sh.weight(n));
  if (path == GradPath::direct && !sh.equal) {
    const float w = static_cast<float>(static_cast<double>(n) / static_cast<double>(sh.total));
    for (size_t e = 0; e < g.n; ++e) g.flat[e] *= w;
  }
}

// Sliced path: each slice's gradients (a mean over its rows) are added into
// the flat buffer weighted by the slice's share of the batch (1/ranks each
// when nothing is scattered), so the sum over ranks is the batch mean.
void grads_sliced(Local& L, const CallDesc& d, const Share& sh, const Grads& g, Reported& rep) {
  const size_t n_out = d.collects.size();
  run_slices(L, d, sh, false, rep, [&](const std::vector<Array>& outs, int64_t s, int64_t n) {
    const float w = sh.scattered ? static_cast<float>(static_cast<double>(n) / static_cast<double>(sh.total))
                                 : 1.f / static_cast<float>(L.ranks);
    for (size_t gi = 0; gi + n_out < outs.size(); ++gi) {
      const float* src = outs[n_out + gi].data<float>();
      float* dst = g.flat + g.off[gi];
      const int64_t cnt = outs[n_out + gi].numel();
      if (s == 0) for (int64_t e = 0; e < cnt; ++e) dst[e] = w * src[e];
      else for (int64_t e = 0; e < cnt; ++e) dst[e] += w * src[e];
    }
  });
}

// A training step: this rank's gradients into the flat buffer (by the
// step's GradPath), ONE all-reduce of it, then the update function on the
// combined gradients.
ShareResult run_train(Local& L, const CallDesc& d, const Share& sh) {
  const FunctionDef& def = L.defs[d.fn];
  const size_t n_out = d.collects.size();
  Grads g;
  for (size_t i = n_out; i < def.outputs.size(); ++i) {
    g.off.push_back(g.n);
    g.n += static_cast<size_t>(numel(L.graph->node(def.outputs[i]).shape));
  }
  const GradPath path = grad_path(L.dcomm != nullptr, sh.total, L.ranks, d.num_slices, sh.rows);
  if (path == GradPath::device) {
    g.flat = L.ex->scratch_floats(g.n);
  } else {
    if (L.flat.size() != g.n) L.flat.assign(g.n, 0.f);
    g.flat = L.flat.data();
  }
  ShareResult R;
  Reported rep(L, d);
  if (!sh.ran()) {
    std::fill(g.flat, g.flat + g.n, 0.f);  // host paths only: a rank with no rows adds nothing
  } else {
    if (path == GradPath::sliced) grads_sliced(L, d, sh, g, rep);
    else grads_in_one_slice(L, d, sh, g, path, rep);
    R.ran = true;
    R.rows = sh.scattered ? sh.rows : 1;
    R.outs = rep.finish();
  }
  if (path == GradPath::device) {
    L.dcomm->all_reduce(g.flat, g.flat, g.n, comm::ElemType::f32, ReduceOp::avg, L.ex->stream());
    // The watchdog: a failed or missing peer raises here instead of
    // hanging the update's synchronisation.
    L.dcomm->wait();
  } else if (L.ranks > 1) {
    // Equal shares in one slice: every rank's gradient is a mean over the
    // same number of rows, so they are averaged; otherwise they were
    // weighted above and are summed.
    const bool avg = sh.ran() && sh.equal && path == GradPath::direct;
    L.group->all_reduce(g.flat, g.flat, g.n, comm::ElemType::f32, avg ? ReduceOp::avg : ReduceOp::sum);
  }
  const FunctionDef& ud = L.defs[static_cast<size_t>(d.update_fn)];
  std::vector<ArrayView> gv;
  for (size_t gi = 0; gi < ud.inputs.size(); ++gi) {
    const Node& gn = L.graph->node(ud.inputs[gi]);
    gv.push_back({DType::f32, gn.shape, g.flat + g.off.at(gi)});
  }
  run_fn(L, static_cast<uint32_t>(d.update_fn), false, gv);
  return R;
}

}  // namespace

GradPath grad_path(bool device_comm, int64_t total, int ranks, uint32_t num_slices, int64_t rows) {
  const bool scattered = total >= 0;
  const bool equal = !scattered || total % ranks == 0;
  const bool one_slice = !scattered || std::min<int64_t>(num_slices, rows) <= 1;
  // NCCL averages; it cannot weight ranks by rows, so an uneven batch (or a
  // sliced step) combines on the host even on NCCL ranks.
  if (device_comm && equal && one_slice && (!scattered || rows > 0)) return GradPath::device;
  return one_slice ? GradPath::direct : GradPath::sliced;
}

ShareResult run_share(Local& L, const CallDesc& d) {
  check_call(L, d);
  // Ranks on a device copy rows straight from the Data segments: lock them once.
  for (const InputDesc& in : d.inputs)
    if (in.seg != 0) pin_segment(L, in.seg, in.base, in.seg_bytes);
  const Share sh = share_of(L, d);
  return d.update_fn >= 0 ? run_train(L, d, sh) : run_plain(L, d, sh);
}


std::vector<Array> combine(const std::vector<ResultView>& ranks, const std::vector<Collect>& collects,
                           const std::string& fn_name) {
  std::vector<Array> out;
  for (size_t i = 0; i < collects.size(); ++i) {
    Accum acc(collects[i], i);
    DType t = DType::f32;
    Shape empty_shape;
    bool any = false;
    for (const ResultView& r : ranks) {
      if (!r.ran || i >= r.outs.size()) continue;
      if (collects[i] == Collect::none && &r != &ranks[0]) continue;
      t = r.outs[i].dtype;
      empty_shape = r.outs[i].shape;
      any = true;
      acc.add_view(r.outs[i], static_cast<double>(r.rows));
    }
    if (!empty_shape.empty()) empty_shape[0] = 0;
    out.push_back(any ? acc.result(t, empty_shape) : Array());
  }
  return out;
}

}  // namespace synk::detail
