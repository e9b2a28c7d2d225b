// src/wire/wire.cpp — the encoders and decoders of wire.hpp.
#include "wire/wire.hpp"

#include <algorithm>

namespace synk::detail {

// ---- wire format -------------------------------------------------------------------
// [u64 header offset][inline blobs, 64-byte aligned][header]

std::vector<uint8_t> encode_call(const CallDesc& d, const std::vector<CallInput>& in,
                                 std::span<const int64_t> indices) {
  Writer w;
  w.put<uint64_t>(0);
  w.align(64);
  uint64_t idx_off = 0;
  if (!indices.empty()) {
    idx_off = w.buf.size();
    w.bytes(indices.data(), indices.size_bytes());
    w.align(64);
  }
  std::vector<uint64_t> inline_off(in.size(), 0);
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i].seg != 0) continue;
    inline_off[i] = w.buf.size();
    const size_t nb = static_cast<size_t>(in[i].view.numel()) * dtype_size(in[i].view.dtype);
    if (nb) w.bytes(in[i].view.data, nb);
    w.align(64);
  }
  const uint64_t hdr = w.buf.size();
  std::memcpy(w.buf.data(), &hdr, sizeof hdr);
  w.put(d.fn);
  w.put(d.update_fn);
  w.put(d.n_outputs);
  w.put(d.num_slices);
  w.put(d.chunks);
  w.put(d.total);
  w.put(static_cast<uint8_t>(d.batch));
  w.put(d.range_begin);
  w.put<uint64_t>(indices.size());
  w.put(idx_off);
  w.put(d.call_no);
  w.str(d.name);
  w.put<uint32_t>(static_cast<uint32_t>(d.collects.size()));
  for (Collect c : d.collects) w.put(static_cast<uint8_t>(c));
  w.put<uint32_t>(static_cast<uint32_t>(in.size()));
  for (size_t i = 0; i < in.size(); ++i) {
    w.put<uint8_t>(in[i].scattered ? 1 : 0);
    w.put(static_cast<uint8_t>(in[i].view.dtype));
    w.put<uint32_t>(static_cast<uint32_t>(in[i].view.shape.size()));
    for (Dim x : in[i].view.shape) w.put<int64_t>(x);
    w.put<uint8_t>(in[i].seg != 0 ? 0 : 1);
    w.put<uint64_t>(in[i].seg != 0 ? in[i].seg : inline_off[i]);
  }
  w.put(d.shard_flat);
  w.put(d.shard_slice);
  w.put<uint32_t>(static_cast<uint32_t>(d.shard_params.size()));
  for (int32_t v : d.shard_params) w.put(v);
  return std::move(w.buf);
}

namespace {

[[noreturn]] void bad(const std::string& what) { throw FormatError("runtime: corrupt call command: " + what); }

// a + b <= limit without overflow.
bool fits(uint64_t a, uint64_t b, uint64_t limit) { return a <= limit && b <= limit - a; }

// Bytes of a dense array, refusing negative dims and overflow (a corrupt
// `what`).
uint64_t checked_bytes(const Shape& s, DType t, const char* what = "call command") {
  auto refuse = [&](const std::string& m) { throw FormatError(std::string("runtime: corrupt ") + what + ": " + m); };
  uint64_t n = 1;
  for (Dim d : s) {
    if (d < 0) refuse("negative dim in shape " + to_string(s));
    if (d != 0 && n > (uint64_t{1} << 62) / static_cast<uint64_t>(d)) refuse("shape " + to_string(s) + " overflows");
    n *= static_cast<uint64_t>(d);
  }
  if (n > (uint64_t{1} << 62) / dtype_size(t)) refuse("shape " + to_string(s) + " overflows");
  return n * dtype_size(t);
}

}  // namespace

CallDesc decode_call(const uint8_t* p, size_t n, const std::function<std::span<const uint8_t>(uint64_t)>& resolve) {
  Reader head(p, n);
  const uint64_t hdr = head.get<uint64_t>();
  if (hdr < 8 || hdr > n) bad("header offset " + std::to_string(hdr) + " outside the " + std::to_string(n) + " bytes");
  Reader r(p + hdr, n - hdr);
  CallDesc d;
  d.fn = r.get<uint32_t>();
  d.update_fn = r.get<int32_t>();
  d.n_outputs = r.get<uint32_t>();
  d.num_slices = r.get<uint32_t>();
  if (d.num_slices < 1) bad("num_slices 0");
  d.chunks = r.get<uint32_t>();
  if (d.update_fn < -1) bad("update function " + std::to_string(d.update_fn));
  d.total = r.get<int64_t>();
  if (d.total < -1) bad("row count " + std::to_string(d.total));
  if (d.chunks > kMaxChunks || (d.total >= 0 ? static_cast<int64_t>(d.chunks) > d.total : d.chunks > 1))
    bad(std::to_string(d.chunks) + " row chunks for " + std::to_string(d.total) + " rows");
  const uint8_t kind = r.get<uint8_t>();
  if (kind > static_cast<uint8_t>(Batch::Kind::indices)) bad("batch kind " + std::to_string(kind));
  d.batch = static_cast<Batch::Kind>(kind);
  d.range_begin = r.get<int64_t>();
  const uint64_t nidx = r.get<uint64_t>();
  const uint64_t idx_off = r.get<uint64_t>();
  if (nidx > 0) {
    if (idx_off % alignof(int64_t) != 0 || nidx > hdr / 8 || !fits(idx_off, nidx * 8, hdr))
      bad("index list (" + std::to_string(nidx) + " at " + std::to_string(idx_off) + ") outside the arguments");
    d.indices = reinterpret_cast<const int64_t*>(p + idx_off);
  }
  d.call_no = r.get<uint64_t>();
  d.name = r.str();
  const uint32_t nc = r.get<uint32_t>();
  for (uint32_t i = 0; i < nc; ++i) {
    const uint8_t c = r.get<uint8_t>();
    if (c > static_cast<uint8_t>(Collect::none)) bad("collect mode " + std::to_string(c));
    d.collects.push_back(static_cast<Collect>(c));
  }
  const uint32_t ni = r.get<uint32_t>();
  int64_t rows = -1;
  for (uint32_t i = 0; i < ni; ++i) {
    InputDesc x;
    x.scattered = r.get<uint8_t>() != 0;
    const uint8_t t = r.get<uint8_t>();
    if (t > static_cast<uint8_t>(DType::i32)) bad("dtype " + std::to_string(t) + " of input " + std::to_string(i));
    x.dtype = static_cast<DType>(t);
    const uint32_t nd = r.get<uint32_t>();
    if (nd > 16) bad("input " + std::to_string(i) + " has " + std::to_string(nd) + " dims");
    for (uint32_t k = 0; k < nd; ++k) x.shape.push_back(r.get<int64_t>());
    const uint64_t nb = checked_bytes(x.shape, x.dtype);
    const uint8_t src = r.get<uint8_t>();
    const uint64_t v = r.get<uint64_t>();
    if (src == 0) {
      const std::span<const uint8_t> seg = resolve(v);
      if (nb > seg.size())
        bad("input " + std::to_string(i) + " (" + std::to_string(nb) + " bytes) exceeds its segment of " +
            std::to_string(seg.size()) + " bytes");
      x.base = seg.data();
      x.seg = v;
      x.seg_bytes = seg.size();
    } else if (src == 1) {
      if (v % 64 != 0 || !fits(v, nb, hdr)) bad("inline input " + std::to_string(i) + " outside the arguments");
      x.base = p + v;
    } else {
      bad("input source " + std::to_string(src));
    }
    if (x.scattered) {
      if (x.shape.empty()) bad("scattered input " + std::to_string(i) + " has no rows");
      if (rows >= 0 && x.shape[0] != rows) bad("scattered inputs with different row counts");
      rows = x.shape[0];
    }
    d.inputs.push_back(std::move(x));
  }
  // The sharded optimizer's layout (the rank checks the ids against its graph).
  d.shard_flat = r.get<int32_t>();
  d.shard_slice = r.get<uint64_t>();
  const uint32_t np = r.get<uint32_t>();
  if (d.shard_flat < -1 || (d.shard_flat >= 0) != (np > 0) || (d.shard_flat >= 0 && d.update_fn < 0))
    bad("sharded optimizer layout (" + std::to_string(np) + " params, slice variable " + std::to_string(d.shard_flat) + ")");
  if (np > n / 4) bad(std::to_string(np) + " sharded params");
  for (uint32_t i = 0; i < np; ++i) d.shard_params.push_back(r.get<int32_t>());
  // The rows the call selects must lie inside the scattered inputs.
  if (d.total >= 0) {
    if (rows < 0) bad("rows selected but no input is scattered");
    switch (d.batch) {
      case Batch::Kind::all:
        if (d.total != rows) bad("row count " + std::to_string(d.total) + " of " + std::to_string(rows));
        break;
      case Batch::Kind::range:
        if (d.range_begin < 0 || d.range_begin > rows || d.total > rows - d.range_begin)
          bad("range at " + std::to_string(d.range_begin) + " of " + std::to_string(d.total) + " rows outside " +
              std::to_string(rows));
        break;
      case Batch::Kind::indices:
        if (static_cast<uint64_t>(d.total) != nidx) bad("index count differs from the row count");
        for (uint64_t k = 0; k < nidx; ++k) {
          int64_t ix;
          std::memcpy(&ix, p + idx_off + k * 8, 8);
          if (ix < 0 || ix >= rows) bad("row index " + std::to_string(ix) + " outside " + std::to_string(rows));
        }
        break;
    }
  }
  return d;
}

// ---- result buffers --------------------------------------------------------------------

namespace {
constexpr size_t kResultHead = 64;
constexpr uint32_t kMaxResultDims = 64;
size_t out_head(size_t ndim) { return 8 + 8 * ndim; }
size_t align64(size_t x) { return (x + 63) / 64 * 64; }
}  // namespace

size_t result_out_bytes(DType t, size_t ndim, int64_t numel) {
  return align64(out_head(ndim)) + align64(static_cast<size_t>(numel) * dtype_size(t));
}

size_t result_bytes(const std::vector<std::pair<DType, Shape>>& outs) {
  size_t b = kResultHead;
  for (const auto& [t, s] : outs) b += result_out_bytes(t, s.size(), numel(s));
  return b;
}

namespace {
// `out(i)` gives output i's view (an ArrayView or something holding one):
// a template, not a std::function, so writing a result allocates nothing.
template <class Out>
size_t write_result_impl(bool ran, int64_t rows, size_t n_outs, const Out& out, uint8_t* dst, size_t cap) {
  size_t need = kResultHead;
  for (size_t i = 0; i < n_outs; ++i) {
    const ArrayView& a = out(i);
    need += result_out_bytes(a.dtype, a.shape.size(), a.numel());
  }
  if (need > cap)
    throw BackendError("runtime: the outputs need " + std::to_string(need) + " bytes but the result buffer has " +
                       std::to_string(cap));
  // The head: u32 ran, pad, i64 rows, u32 count, padded to kResultHead.
  Writer w(dst, cap);
  w.put<uint32_t>(ran ? 1 : 0);
  w.put<uint32_t>(0);
  w.put<int64_t>(rows);
  w.put<uint32_t>(static_cast<uint32_t>(n_outs));
  w.align(kResultHead);
  for (size_t i = 0; i < n_outs; ++i) {
    const ArrayView& a = out(i);
    w.put<uint32_t>(static_cast<uint32_t>(a.dtype));
    w.put<uint32_t>(static_cast<uint32_t>(a.shape.size()));
    for (Dim x : a.shape) w.put<int64_t>(x);
    w.align(64);
    w.bytes(a.data, static_cast<size_t>(a.numel()) * dtype_size(a.dtype));
    w.align(64);
  }
  return w.size();
}
}  // namespace

size_t write_result(const ShareResult& r, uint8_t* dst, size_t cap) {
  return write_result_impl(r.ran, r.rows, r.outs.size(), [&](size_t i) { return r.outs[i].view(); }, dst, cap);
}

size_t result_view_bytes(const ResultView& v) {
  size_t b = kResultHead;
  for (const ArrayView& a : v.outs) b += result_out_bytes(a.dtype, a.shape.size(), a.numel());
  return b;
}

size_t write_result_view(const ResultView& v, uint8_t* dst, size_t cap) {
  return write_result_impl(v.ran, v.rows, v.outs.size(), [&](size_t i) -> const ArrayView& { return v.outs[i]; },
                           dst, cap);
}

// write_result's reader: every field is read through a Reader bounded by
// `cap`, and every dtype, dim count and shape is checked before its data is
// taken, so a short or corrupt buffer is a FormatError, never a read past it.
ResultView read_result(const uint8_t* src, size_t cap) {
  Reader r(src, cap, "result buffer");
  ResultView v;
  v.ran = r.get<uint32_t>() != 0;
  r.get<uint32_t>();
  v.rows = r.get<int64_t>();
  const uint32_t n = r.get<uint32_t>();
  r.align(kResultHead);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t t = r.get<uint32_t>(), nd = r.get<uint32_t>();
    if (t > static_cast<uint32_t>(DType::i32))
      throw FormatError("runtime: corrupt result buffer: dtype " + std::to_string(t) + " of output " + std::to_string(i));
    if (nd > kMaxResultDims)
      throw FormatError("runtime: corrupt result buffer: output " + std::to_string(i) + " has " + std::to_string(nd) +
                        " dims");
    ArrayView a;
    a.dtype = static_cast<DType>(t);
    a.shape.resize(nd);
    for (uint32_t k = 0; k < nd; ++k) a.shape[k] = r.get<int64_t>();
    r.align(64);
    const uint64_t nb = checked_bytes(a.shape, a.dtype, "result buffer");
    a.data = r.take(nb);
    r.align(64);
    v.outs.push_back(std::move(a));
  }
  return v;
}

std::vector<uint8_t> encode_node_results(const std::vector<ResultView>& mine) {
  Writer w;
  w.put<uint64_t>(mine.size());
  w.align(64);
  for (const ResultView& v : mine) {
    const size_t need = result_view_bytes(v);
    w.put<uint64_t>(need);
    w.align(64);
    write_result_view(v, w.grow(need), need);
  }
  return std::move(w.buf);
}

void decode_node_results(const uint8_t* bytes, size_t n, int node, int ranks, std::vector<ResultView>& all) {
  Reader r(bytes, n, "results from another node");
  const uint64_t count = r.get<uint64_t>();
  if (count != static_cast<uint64_t>(ranks))
    throw FormatError("runtime: node " + std::to_string(node) + " sent results of " + std::to_string(count) +
                      " ranks, expected " + std::to_string(ranks));
  r.align(64);
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t nb = r.get<uint64_t>();
    r.align(64);
    all.push_back(read_result(r.take(nb), nb));
  }
}

// ---- the checks between nodes -------------------------------------------------------

namespace {
const char* comm_name(uint8_t comm) {
  switch (static_cast<CommBackend>(comm)) {
    case CommBackend::automatic: return "automatic";
    case CommBackend::nccl: return "nccl";
    case CommBackend::host_staged: return "host_staged";
  }
  return "?";
}

// A stamp is fixed-size: any other size is another build of synk.
void stamp_size(size_t n, size_t want, int node, const char* what) {
  if (n != want)
    throw FormatError(std::string("runtime: node ") + std::to_string(node) + " sent a " + what + " of " +
                      std::to_string(n) + " bytes, expected " + std::to_string(want) +
                      " (every node must run the same build of synk)");
}
}  // namespace

std::string ForkStamp::describe() const {
  return std::string("program '") + exe + "' (" + std::to_string(exe_size) + " bytes), device " +
         (device == Device::cuda ? "cuda" : "cpu") + (device == Device::cuda ? std::string(", comm ") + comm_name(comm) : "") + ", seed " +
         std::to_string(seed) + (deterministic ? ", deterministic with " + std::to_string(chunks) + " chunks" : "");
}

void encode_fork_stamp(const ForkStamp& s, uint8_t* dst) {
  Writer w(dst, kForkStampBytes);
  w.put(s.ranks);
  w.put(static_cast<uint8_t>(s.device));
  w.put(s.comm);
  w.put(s.deterministic);
  w.put<uint8_t>(0);
  w.put(s.seed);
  w.put(s.chunks);
  w.put(s.gpus);
  w.put(s.host);
  w.put(s.devices);
  w.put(s.exe_size);
  w.text(s.exe, sizeof s.exe);
}

ForkStamp decode_fork_stamp(const uint8_t* p, size_t n, int node) {
  stamp_size(n, kForkStampBytes, node, "fork stamp");
  Reader r(p, n, "fork stamp");
  ForkStamp s;
  s.ranks = r.get<int32_t>();
  const uint8_t device = r.get<uint8_t>();
  if (device > static_cast<uint8_t>(Device::cuda))
    throw FormatError("fork stamp of node " + std::to_string(node) + ": device " + std::to_string(device) +
                      " is not a synk::Device");
  s.device = static_cast<Device>(device);
  s.comm = r.get<uint8_t>();
  s.deterministic = r.get<uint8_t>();
  r.get<uint8_t>();
  s.seed = r.get<uint64_t>();
  s.chunks = r.get<int32_t>();
  s.gpus = r.get<int32_t>();
  s.host = r.get<int32_t>();
  s.devices = r.get<uint64_t>();
  s.exe_size = r.get<uint64_t>();
  r.text(s.exe, sizeof s.exe);
  return s;
}

void encode_call_stamp(const CallStamp& s, uint8_t* dst) {
  Writer w(dst, kCallStampBytes);
  w.text(s.kind, sizeof s.kind);
  w.put(s.a);
  w.put(s.b);
  w.text(s.text, sizeof s.text);
}

CallStamp decode_call_stamp(const uint8_t* p, size_t n, int node) {
  stamp_size(n, kCallStampBytes, node, "call stamp");
  Reader r(p, n, "call stamp");
  CallStamp s;
  r.text(s.kind, sizeof s.kind);
  s.a = r.get<uint64_t>();
  s.b = r.get<uint64_t>();
  r.text(s.text, sizeof s.text);
  return s;
}

// ---- a map's results between nodes ---------------------------------------------------

void append_job_result(Writer& w, std::span<const uint8_t> result) {
  w.put<uint64_t>(result.size());
  w.bytes(result.data(), result.size());
  w.align(8);
}

std::vector<uint8_t> encode_job_results(const std::string& error, std::span<const uint8_t> results) {
  Writer w;
  w.put<uint64_t>(error.size());
  w.bytes(error.data(), error.size());
  w.align(8);
  w.bytes(results.data(), results.size());
  return std::move(w.buf);
}

JobResults decode_job_results(const uint8_t* p, size_t n, int node) {
  const std::string what = "job results from node " + std::to_string(node);
  Reader r(p, n, what.c_str());
  JobResults j;
  const uint64_t nerr = r.get<uint64_t>();
  const uint8_t* err = r.take(nerr);
  j.error.assign(reinterpret_cast<const char*>(err), nerr);
  r.align(8);
  j.results = {r.at(r.offset()), r.remaining()};
  return j;
}

uint64_t read_job_results(std::span<const uint8_t> results, const std::function<void(std::span<const uint8_t>)>& each) {
  Reader r(results.data(), results.size(), "job results");
  uint64_t k = 0;
  for (; r.remaining() > 0; ++k) {
    const uint64_t len = r.get<uint64_t>();
    const uint8_t* b = r.take(len);
    r.align(8);
    each({b, len});
  }
  return k;
}

// ---- variable collectives ----------------------------------------------------------------

std::vector<uint8_t> encode_var_ops(const std::vector<VarOp>& ops, std::span<const uint8_t> extra) {
  Writer w;
  w.put<uint32_t>(static_cast<uint32_t>(ops.size()));
  const size_t extra_off = (4 + ops.size() * kVarOpBytes + 63) / 64 * 64;
  for (const VarOp& o : ops) {
    w.put(static_cast<uint8_t>(o.kind));
    w.put(static_cast<uint8_t>(o.op));
    w.put(o.root);
    w.put(o.var);
    w.put<uint64_t>(o.kind == VarOpKind::scatter ? extra_off + o.in_off : 0);
  }
  w.align(64);
  w.bytes(extra.data(), extra.size());
  return std::move(w.buf);
}

size_t var_ops_bytes(size_t count) { return 4 + count * kVarOpBytes; }

std::vector<VarOp> decode_var_ops(const uint8_t* p, size_t n) {
  Reader r(p, n);
  const uint32_t count = r.get<uint32_t>();
  if (count > n / kVarOpBytes) throw FormatError("runtime: corrupt collective command: " + std::to_string(count) + " ops");
  std::vector<VarOp> ops(count);
  for (VarOp& o : ops) {
    const uint8_t kind = r.get<uint8_t>(), op = r.get<uint8_t>();
    if (kind >= static_cast<uint8_t>(VarOpKind::kCount))
      throw FormatError("runtime: corrupt collective command: op kind " + std::to_string(kind));
    if (op > static_cast<uint8_t>(ReduceOp::prod))
      throw FormatError("runtime: corrupt collective command: reduce op " + std::to_string(op));
    o.kind = static_cast<VarOpKind>(kind);
    o.op = static_cast<ReduceOp>(op);
    o.root = r.get<int32_t>();
    o.var = r.get<int32_t>();
    o.in_off = r.get<uint64_t>();
    if (o.kind == VarOpKind::scatter && o.in_off > n)
      throw FormatError("runtime: corrupt collective command: scatter values at " + std::to_string(o.in_off) +
                        " outside the " + std::to_string(n) + " bytes");
  }
  return ops;
}

// ---- one variable of one rank ------------------------------------------------------------

std::vector<uint8_t> encode_var_get(int32_t rank, int32_t var) {
  Writer w;
  w.put(rank);
  w.put(var);
  return std::move(w.buf);
}

std::vector<uint8_t> encode_var_set(int32_t rank, int32_t var, const void* value, size_t nb) {
  Writer w;
  w.put(rank);
  w.put(var);
  w.put<uint64_t>(kValueAt);
  w.align(kValueAt);
  w.bytes(value, nb);
  return std::move(w.buf);
}

VarAccess decode_var_get(const uint8_t* p, size_t n) {
  Reader r(p, n);
  VarAccess a;
  a.rank = r.get<int32_t>();
  a.var = r.get<int32_t>();
  return a;
}

VarAccess decode_var_set(const uint8_t* p, size_t n) {
  VarAccess a = decode_var_get(p, n);
  Reader r(p + 8, n - 8);
  const uint64_t off = r.get<uint64_t>();
  if (off > n)
    throw FormatError("runtime: corrupt command: a value at " + std::to_string(off) + " outside the " +
                      std::to_string(n) + " argument bytes");
  a.value = p + off;
  a.value_bytes = n - off;
  return a;
}

// (+64: a variable of no bytes still gets a buffer.)
size_t var_value_result_bytes(size_t nb) { return nb + 64; }

uint8_t* var_value_slot(uint8_t* dst, size_t cap, size_t nb) {
  if (nb > cap)
    throw FormatError("runtime: corrupt command: a value of " + std::to_string(nb) + " bytes for a result buffer of " +
                      std::to_string(cap));
  return dst;
}

const uint8_t* read_var_value(const uint8_t* src, size_t cap, size_t nb) {
  if (nb > cap)
    throw FormatError("runtime: truncated result buffer: a value of " + std::to_string(nb) + " bytes in " +
                      std::to_string(cap));
  return src;
}


}  // namespace synk::detail
