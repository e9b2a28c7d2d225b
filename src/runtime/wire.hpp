// src/runtime/wire.hpp — every command's arguments as they travel through
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
//   results          write_result / read_result
//   socket           SegMsg (a segment's fd, or its release)
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
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

// ---- a minimal append/read byte format for command arguments ------------------

class Writer {
 public:
  template <class T> void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    bytes(&v, sizeof(T));
  }
  void bytes(const void* p, size_t n) {
    if (n == 0) return;
    const size_t at = buf.size();
    buf.resize(at + n);
    std::memcpy(buf.data() + at, p, n);
  }
  void str(const std::string& s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    bytes(s.data(), s.size());
  }
  void align(size_t a) { buf.resize((buf.size() + a - 1) / a * a); }
  std::vector<uint8_t> buf;
};

class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  template <class T> T get() {
    T v;
    need(sizeof(T));
    std::memcpy(&v, p_ + off_, sizeof(T));
    off_ += sizeof(T);
    return v;
  }
  std::string str() {
    uint32_t n = get<uint32_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(p_ + off_), n);
    off_ += n;
    return s;
  }
  const uint8_t* at(size_t off) const { return p_ + off; }
  size_t offset() const { return off_; }

 private:
  void need(size_t k) const {
    if (off_ + k > n_) throw FormatError("runtime: truncated command arguments");
  }
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
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
// u32 ran at 0, i64 rows at 8, u32 count at 16 (a 64-byte head), then per
// output u32 dtype, u32 ndim, i64 dims... (64-byte aligned), and its data
// 64-byte aligned.
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

// ---- variable collectives (Cmd::collective) ----------------------------------------
// u32 count, then one fixed record per op (kVarOpBytes: u8 kind, u8 ReduceOp,
// i32 root, i32 variable id, u64 offset of scatter's values in the
// arguments), then the extra bytes (scatter's values) 64-byte aligned.
enum class VarOpKind : uint8_t { broadcast = 0, all_reduce, reduce, all_gather, gather, scatter };
struct VarOp {
  VarOpKind kind = VarOpKind::broadcast;
  ReduceOp op = ReduceOp::sum;
  int32_t root = 0;
  int32_t var = -1;
  uint64_t in_off = 0;  // scatter: its values; to encode: offset in `extra`, decoded: in the arguments
};
inline constexpr size_t kVarOpBytes = 1 + 1 + 4 + 4 + 8;
std::vector<uint8_t> encode_var_ops(const std::vector<VarOp>& ops, std::span<const uint8_t> extra);
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


}  // namespace synk::detail
