// src/wire/wire.hpp — every command's arguments as they travel through
// the shared args segment (and a worker's results back), each encoder beside
// its decoder (private header).
//
// The master encodes; every worker decodes what it reads and trusts none of
// it: each count, offset, size and enum is checked against the bytes it came
// in (and the segments it names), so a corrupt command becomes a
// FormatError, never a read outside a mapping. Checks that need the graph
// (is this id a variable?) stay with the code that has the graph.
//
//   Cmd::call        encode_call / decode_call
//   Cmd::collective  encode_var_ops / decode_var_ops
//   Cmd::var_get     encode_var_get / decode_var_get
//   Cmd::var_set     encode_var_set / decode_var_set
//   Cmd::jobs        runtime/jobs.cpp: layout / check_table (the job table
//                    lives in the args segment while the ranks work on it)
//   results          write_result / read_result (Cmd::call);
//                    var_value_slot / read_var_value (Cmd::var_get)
//   between nodes    encode_node_results / decode_node_results (a call's
//                    results), encode/decode_fork_stamp (fork),
//                    encode/decode_call_stamp (RuntimeCore::agree),
//                    encode/decode_job_results (a map's results)
//   socket           SegMsg (a segment's fd, or its release)
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "synk/array.hpp"
#include "synk/data.hpp"
#include "synk/error.hpp"
#include "synk/graph.hpp"
#include "synk/runtime.hpp"

namespace synk::detail {

// A message on a worker's socket: a new segment (with its fd) or a release.
struct SegMsg {
  uint64_t id;
  uint64_t size;
  uint32_t op;  // 1 add (fd attached), 2 release
  uint32_t pad;
};

// ---- a minimal append/read byte format for everything on the wire ------------

// Appends to its own vector, or (constructed over caller-owned bytes) writes
// into them without allocating, refusing to write past their end: the
// result format goes straight into a result segment, the call stamps into a
// stack buffer (both run per call).
class Writer {
 public:
  Writer() = default;
  Writer(uint8_t* p, size_t cap) : fixed_(p), cap_(cap) {}
  template <class T> void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    bytes(&v, sizeof(T));
  }
  void bytes(const void* p, size_t n) {
    if (n == 0) return;
    std::memcpy(grow(n), p, n);
  }
  void str(const std::string& s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }
  // A fixed-size text field of `n` bytes: s cut to n - 1, NUL-padded.
  void text(std::string_view s, size_t n) {
    uint8_t* d = grow(n);
    const size_t k = std::min(n - 1, s.size());
    std::memcpy(d, s.data(), k);
    std::memset(d + k, 0, n - k);
  }
  // Zero bytes up to the next multiple of `a` (from the start).
  void align(size_t a) {
    const size_t pad = (size() + a - 1) / a * a - size();
    if (pad) std::memset(grow(pad), 0, pad);
  }
  // `n` more bytes for the caller to fill (valid until the next write).
  uint8_t* grow(size_t n) {
    if (fixed_) {
      if (n > cap_ - off_)
        throw BackendError("runtime: " + std::to_string(off_ + n) + " bytes to write, the buffer has " +
                           std::to_string(cap_));
      uint8_t* d = fixed_ + off_;
      off_ += n;
      return d;
    }
    const size_t at = buf.size();
    buf.resize(at + n);
    return buf.data() + at;
  }
  size_t size() const { return fixed_ ? off_ : buf.size(); }
  std::vector<uint8_t> buf;  // the bytes written (unless writing into caller-owned bytes)

 private:
  uint8_t* fixed_ = nullptr;
  size_t cap_ = 0, off_ = 0;
};

// Reads what a Writer wrote, never past the n bytes it was given: running
// out is a FormatError naming `what` (e.g. "command arguments").
class Reader {
 public:
  Reader(const uint8_t* p, size_t n, const char* what = "command arguments") : p_(p), n_(n), what_(what) {}
  template <class T> T get() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  std::string str() {
    uint32_t n = get<uint32_t>();
    const uint8_t* s = take(n);
    return std::string(reinterpret_cast<const char*>(s), n);
  }
  // A fixed-size text field of n bytes into dst[n], NUL-terminated whatever
  // the bytes say (a corrupt field is cut, never read past).
  void text(char* dst, size_t n) {
    std::memcpy(dst, take(n), n);
    dst[n - 1] = '\0';
  }
  // The next n bytes, in place.
  const uint8_t* take(size_t n) {
    need(n);
    const uint8_t* s = p_ + off_;
    off_ += n;
    return s;
  }
  // Past the padding to the next multiple of `a` (which must be there).
  void align(size_t a) { take((off_ + a - 1) / a * a - off_); }
  const uint8_t* at(size_t off) const { return p_ + off; }
  size_t offset() const { return off_; }
  size_t remaining() const { return n_ - off_; }

 private:
  void need(size_t k) const {
    if (k > n_ - off_)
      throw FormatError(std::string("runtime: truncated ") + what_ + ": " + std::to_string(k) + " bytes wanted at " +
                        std::to_string(off_) + " of " + std::to_string(n_));
  }
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
  const char* what_;
};

// ---- a call (Cmd::call) as every rank sees it ------------------------------------------------

struct InputDesc {
  bool scattered = false;
  DType dtype = DType::f32;
  Shape shape;  // of the whole source (Data or host array)
  const uint8_t* base = nullptr;
  uint64_t seg = 0;        // the Data segment it lies in (0: inline in the arguments)
  size_t seg_bytes = 0;
};

// The most row chunks of a deterministic call (RuntimeOptions::deterministic).
constexpr uint32_t kMaxChunks = 4096;

struct CallDesc {
  uint32_t fn = 0;         // def index (train: the gradient def)
  int32_t update_fn = -1;  // train: the update def; -1 for a plain call
  uint32_t n_outputs = 0;  // outputs reported (train: the others are gradients)
  uint32_t num_slices = 1;
  // Deterministic mode (RuntimeOptions::deterministic): the batch is split
  // into this many fixed row chunks (<= total; 1 when nothing is
  // scattered), each computed with a dropout key of its own and combined in
  // chunk order; 0: the ordinary split over ranks and slices.
  uint32_t chunks = 0;
  int64_t total = -1;      // rows over all ranks; -1: nothing scattered
  // Ranks report one piece per chunk (a deterministic call with scattered inputs).
  bool chunked() const { return chunks > 0 && total >= 0; }
  Batch::Kind batch = Batch::Kind::all;
  int64_t range_begin = 0;
  const int64_t* indices = nullptr;
  std::vector<InputDesc> inputs;
  std::vector<Collect> collects;  // per reported output
  uint64_t call_no = 0;
  std::string name;
  // A training step with its optimizer sharded (TrainSpec::shard_optimizer):
  // the params' variables in flat order, the variable of this rank's slice
  // of them (shard_slice elements: the update def's parameter) and the
  // slice length; shard_flat -1: every rank updates everything.
  std::vector<int32_t> shard_params;
  int32_t shard_flat = -1;
  uint64_t shard_slice = 0;
  bool sharded() const { return shard_flat >= 0; }
};

// Encodes a call for the args segment. Data inputs are named by segment id,
// host arrays are appended inline.
struct CallInput {
  bool scattered = false;
  uint64_t seg = 0;         // Data segment id, 0 for a host array
  ArrayView view;           // shape/dtype (and data for a host array)
};
std::vector<uint8_t> encode_call(const CallDesc& d, const std::vector<CallInput>& in,
                                 std::span<const int64_t> indices);
// resolve(id) gives the local mapping of a segment (throws for an unknown
// id). Every offset, size, count and enum of the encoding is checked against
// the bounds of `p[0, n)` and of the segments it names (FormatError), so a
// corrupt command cannot make a rank read outside its mappings.
CallDesc decode_call(const uint8_t* p, size_t n,
                     const std::function<std::span<const uint8_t>(uint64_t id)>& resolve);

// What one rank produced: its rows and its outputs already combined over
// its slices (outputs empty when it had no rows).
struct ShareResult {
  bool ran = false;
  int64_t rows = 0;  // weight for avg (1 per rank when nothing is scattered)
  std::vector<Array> outs;
};

// ---- results (a worker's result segment, read by the master) ------------------------
// u32 ran, u32 pad, i64 rows, u32 count (a 64-byte head), then per output
// u32 dtype, u32 ndim, i64 dims... (64-byte aligned), and its data 64-byte
// aligned. write_result refuses a buffer too small (BackendError);
// read_result reads nothing outside [src, src + cap) and refuses a short or
// corrupt buffer (FormatError).
size_t result_bytes(const std::vector<std::pair<DType, Shape>>& outs);
// One output's part of that: `ndim` dims, `numel` elements.
size_t result_out_bytes(DType t, size_t ndim, int64_t numel);
size_t write_result(const ShareResult& r, uint8_t* dst, size_t cap);
struct ResultView {
  bool ran = false;
  int64_t rows = 0;
  std::vector<ArrayView> outs;
};
ResultView read_result(const uint8_t* src, size_t cap);
// The same format from a view (a node master forwarding its ranks'
// results to the other nodes): its size, and writing it.
size_t result_view_bytes(const ResultView& v);
size_t write_result_view(const ResultView& v, uint8_t* dst, size_t cap);

// A node master's results for the other nodes (exchange_results): u64 rank
// count (a 64-byte head), then per rank u64 bytes (a 64-byte head) and its
// result in write_result's format.
std::vector<uint8_t> encode_node_results(const std::vector<ResultView>& mine);
// Appends node `node`'s results (`bytes` as it sent them) to `all`: exactly
// `ranks` of them, each inside the bytes, or a FormatError. The views point
// into `bytes`.
void decode_node_results(const uint8_t* bytes, size_t n, int node, int ranks, std::vector<ResultView>& all);

// ---- the checks between nodes (runtime/nodes.cpp) ---------------------------------

// What every node must agree on at fork(), its rank count, and what the
// nodes' joint GPU decisions need (plan_node_gpus). The stamp holds the
// comm asked for, not whether this node alone would use NCCL: that depends
// on its rank count (one rank alone does not under automatic), so nodes of
// different sizes would seem to differ; the job decides jointly.
// On the wire (kForkStampBytes): i32 ranks, u8 device, u8 comm, u8
// deterministic, u8 pad, u64 seed, i32 chunks, i32 gpus, i32 host, u64
// devices, u64 exe_size, char exe[64].
struct ForkStamp {
  int32_t ranks = 0;
  Device device = Device::cpu;
  uint8_t comm = 0, deterministic = 0;
  uint64_t seed = 0;
  int32_t chunks = 0;
  int32_t gpus = 0;         // the GPUs this node sees (CUDA ranks)
  int32_t host = 0;         // comm::NodeLink::host_leader
  uint64_t devices = 0;     // a hash of CUDA_VISIBLE_DEVICES (0: unset)
  uint64_t exe_size = 0;
  char exe[64] = {};
  std::string describe() const;
  bool same(const ForkStamp& o) const {
    return device == o.device && comm == o.comm && deterministic == o.deterministic && seed == o.seed &&
           chunks == o.chunks && exe_size == o.exe_size && std::strcmp(exe, o.exe) == 0;
  }
};
inline constexpr size_t kForkStampBytes = 4 + 4 + 8 + 4 + 4 + 4 + 8 + 8 + 64;
// Into dst[kForkStampBytes].
void encode_fork_stamp(const ForkStamp& s, uint8_t* dst);
// Node `node`'s n bytes: exactly kForkStampBytes, or a FormatError.
ForkStamp decode_fork_stamp(const uint8_t* p, size_t n, int node);

// One call as a node makes it (RuntimeCore::agree). On the wire
// (kCallStampBytes): char kind[16], u64 a, u64 b, char text[96].
struct CallStamp {
  char kind[16] = {};
  uint64_t a = 0, b = 0;
  char text[96] = {};
  bool same(const CallStamp& o) const { return std::strcmp(kind, o.kind) == 0 && a == o.a && b == o.b; }
  std::string describe() const { return std::string(kind) + " " + text; }
};
inline constexpr size_t kCallStampBytes = 16 + 8 + 8 + 96;
void encode_call_stamp(const CallStamp& s, uint8_t* dst);
CallStamp decode_call_stamp(const uint8_t* p, size_t n, int node);

// A map's results from one node (run_jobs_nodes): u64 error length, the
// error's text (8-byte aligned), then the node's results: fixed-size slots
// (a fast map), or per job u64 length and its bytes, 8-byte aligned.
void append_job_result(Writer& w, std::span<const uint8_t> result);
std::vector<uint8_t> encode_job_results(const std::string& error, std::span<const uint8_t> results);
struct JobResults {
  std::string error;  // "": every job of the node ran
  std::span<const uint8_t> results;
};
// Node `node`'s n bytes (FormatError when they are short).
JobResults decode_job_results(const uint8_t* p, size_t n, int node);
// Calls each(result) per appended result in `results`; returns how many
// (FormatError when a length runs past the bytes).
uint64_t read_job_results(std::span<const uint8_t> results, const std::function<void(std::span<const uint8_t>)>& each);

// ---- variable collectives (Cmd::collective) ----------------------------------------
// u32 count, then one fixed record per op (kVarOpBytes: u8 kind, u8 ReduceOp,
// i32 root, i32 variable id, u64 offset of scatter's values in the
// arguments), then the extra bytes (scatter's values) 64-byte aligned.
// kCount last: the decoder refuses kinds from it on (a new kind needs no decoder change).
enum class VarOpKind : uint8_t { broadcast = 0, all_reduce, reduce, all_gather, gather, scatter, kCount };
struct VarOp {
  VarOpKind kind = VarOpKind::broadcast;
  ReduceOp op = ReduceOp::sum;
  int32_t root = 0;
  int32_t var = -1;
  uint64_t in_off = 0;  // scatter: its values; to encode: offset in `extra`, decoded: in the arguments
};
inline constexpr size_t kVarOpBytes = 1 + 1 + 4 + 4 + 8;
std::vector<uint8_t> encode_var_ops(const std::vector<VarOp>& ops, std::span<const uint8_t> extra);
// The first bytes of that which say what every rank does (the count and the
// op records, not scatter's values): what the nodes compare.
size_t var_ops_bytes(size_t count);
// Checks kinds, ops and that scatter offsets lie inside the n bytes.
std::vector<VarOp> decode_var_ops(const uint8_t* p, size_t n);

// ---- one variable of one rank (Cmd::var_get, Cmd::var_set) -------------------------
// i32 rank (-1: every worker), i32 variable id, u64 offset of the value
// (var_set; kValueAt), the value 64-byte aligned.
inline constexpr uint64_t kValueAt = 64;
struct VarAccess {
  int32_t rank = 0;
  int32_t var = -1;
  const uint8_t* value = nullptr;  // var_set: the value's bytes...
  size_t value_bytes = 0;          // ...and how many the arguments hold from there
};
std::vector<uint8_t> encode_var_get(int32_t rank, int32_t var);
std::vector<uint8_t> encode_var_set(int32_t rank, int32_t var, const void* value, size_t nb);
VarAccess decode_var_get(const uint8_t* p, size_t n);
VarAccess decode_var_set(const uint8_t* p, size_t n);  // checks the value's offset
// Cmd::var_get's result: the value's nb bytes at the start of the rank's
// result buffer. The capacity the master provides for it; where the rank
// writes it (checked against the buffer's cap, FormatError); where the
// master reads it (the same check).
size_t var_value_result_bytes(size_t nb);
uint8_t* var_value_slot(uint8_t* dst, size_t cap, size_t nb);
const uint8_t* read_var_value(const uint8_t* src, size_t cap, size_t nb);


}  // namespace synk::detail
