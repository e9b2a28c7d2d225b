// src/graph/serialize.cpp — a Graph's nodes and its FunctionDefs to bytes and
// back, so a master can ship them to workers.
//
// Layout (integers little-endian whatever the host, floats as IEEE bits so
// NaN payloads and -0 survive):
//
//   header   "SYNKGRPH" | u32 version | u64 payload size | u32 CRC32(payload)
//   payload  u32 node count, then per node:
//              u16 op, u8 dtype, u8 flag,
//              u32 n + n x i64 shape, u32 n + n x i32 inputs,
//              u32 n + n x i64 ints,  u32 n + n x f32 floats, u32 n + n name bytes
//            u32 function count, then per function:
//              u32 n + name bytes, u32 n + n x i32 inputs, u32 n + n x i32 outputs,
//              u32 n + n x u8 collects, u32 n + n x (i32 variable, i32 value) updates
//
// The reader trusts nothing: each read is checked against the bytes left and
// each count against what the remaining bytes could hold before anything is
// allocated, so corrupt input is a FormatError naming field and offset.
#include "synk/serialize.hpp"

#include <zlib.h>

#include <cstring>
#include <string>
#include <string_view>
#include <unordered_set>

#include "synk/error.hpp"

namespace synk {
namespace {

constexpr char kMagic[8] = {'S', 'Y', 'N', 'K', 'G', 'R', 'P', 'H'};
constexpr size_t kHeaderSize = 8 + 4 + 8 + 4;
// Smallest encodings: a node is op+dtype+flag plus five counts, a function
// five counts. Used to bound the outer counts.
constexpr size_t kMinNodeBytes = 2 + 1 + 1 + 5 * 4;
constexpr size_t kMinFunctionBytes = 5 * 4;

class Writer {
 public:
  std::vector<uint8_t> out;

  template <class U> void put(U v) {  // unsigned integer types
    for (size_t i = 0; i < sizeof(U); ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void i32(int32_t v) { put(static_cast<uint32_t>(v)); }
  void i64(int64_t v) { put(static_cast<uint64_t>(v)); }
  void f32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    put(bits);
  }
  void count(size_t n) { put(static_cast<uint32_t>(n)); }
  void str(const std::string& s) {
    count(s.size());
    out.insert(out.end(), s.begin(), s.end());
  }
  void i32s(const std::vector<int32_t>& v) {
    count(v.size());
    for (int32_t x : v) i32(x);
  }
};

// Reads from data[pos, end); `where` ("node 3", "function 'train'") prefixes
// every message so the culprit is named along with the offset.
class Reader {
 public:
  Reader(const uint8_t* data, size_t pos, size_t end) : d_(data), pos_(pos), end_(end) {}
  std::string where = "payload";

  size_t pos() const { return pos_; }
  size_t left() const { return end_ - pos_; }

  [[noreturn]] void fail(const std::string& what, size_t at) const {
    throw FormatError("deserialize: " + where + ": " + what + " at offset " + std::to_string(at));
  }

  template <class U> U get(const char* field) {
    if (left() < sizeof(U))
      fail("truncated " + std::string(field) + " (needs " + std::to_string(sizeof(U)) +
               " bytes, " + std::to_string(left()) + " left)",
           pos_);
    U v = 0;
    for (size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(static_cast<U>(d_[pos_ + i]) << (8 * i));
    pos_ += sizeof(U);
    return v;
  }
  int32_t i32(const char* field) { return static_cast<int32_t>(get<uint32_t>(field)); }
  int64_t i64(const char* field) { return static_cast<int64_t>(get<uint64_t>(field)); }
  float f32(const char* field) {
    const uint32_t bits = get<uint32_t>(field);
    float v;
    std::memcpy(&v, &bits, 4);
    return v;
  }

  // A u32 element count, refused if the bytes left could not hold that many
  // elements of elem_size bytes: a corrupt count never drives an allocation.
  size_t count(const char* field, size_t elem_size, const char* noun = "count") {
    const size_t at = pos_;
    const size_t n = get<uint32_t>(field);
    if (n > left() / elem_size)
      fail(std::string(field) + " " + noun + " " + std::to_string(n) + " needs at least " +
               std::to_string(n * elem_size) + " bytes, only " + std::to_string(left()) + " left",
           at);
    return n;
  }
  std::string str(const char* field) {
    const size_t n = count(field, 1, "length");
    std::string s(reinterpret_cast<const char*>(d_ + pos_), n);
    pos_ += n;
    return s;
  }
  std::vector<int32_t> i32s(const char* field) {
    std::vector<int32_t> v(count(field, 4));
    for (auto& x : v) x = i32(field);
    return v;
  }

 private:
  const uint8_t* d_;
  size_t pos_, end_;
};

void write_node(Writer& w, const Node& n) {
  w.put(static_cast<uint16_t>(n.op));
  w.put(static_cast<uint8_t>(n.dtype));
  w.put(static_cast<uint8_t>(n.flag ? 1 : 0));
  w.count(n.shape.size());
  for (Dim d : n.shape) w.i64(d);
  w.i32s(n.inputs);
  w.count(n.ints.size());
  for (int64_t x : n.ints) w.i64(x);
  w.count(n.floats.size());
  for (float x : n.floats) w.f32(x);
  w.str(n.name);
}

void write_function(Writer& w, const FunctionDef& f) {
  w.str(f.name);
  w.i32s(f.inputs);
  w.i32s(f.outputs);
  w.count(f.collects.size());
  for (Collect c : f.collects) w.put(static_cast<uint8_t>(c));
  w.count(f.updates.size());
  for (const auto& [var, value] : f.updates) {
    w.i32(var);
    w.i32(value);
  }
}

Node read_node(Reader& r, int32_t id) {
  Node n;
  size_t at = r.pos();
  const uint16_t op = r.get<uint16_t>("op");
  if (op >= static_cast<uint16_t>(Op::kCount))
    r.fail("op code " + std::to_string(op) + " out of range (0.." +
               std::to_string(static_cast<int>(Op::kCount) - 1) + ")",
           at);
  n.op = static_cast<Op>(op);
  at = r.pos();
  const uint8_t dtype = r.get<uint8_t>("dtype");
  if (dtype > static_cast<uint8_t>(DType::i32)) r.fail("dtype code " + std::to_string(dtype) + " out of range", at);
  n.dtype = static_cast<DType>(dtype);
  at = r.pos();
  const uint8_t flag = r.get<uint8_t>("flag");
  if (flag > 1) r.fail("flag byte " + std::to_string(flag) + " is neither 0 nor 1", at);
  n.flag = flag != 0;

  n.shape.resize(r.count("shape", 8));
  for (Dim& d : n.shape) {
    at = r.pos();
    d = r.i64("shape dim");
    if (d < 0 && d != batch) r.fail("negative dim " + std::to_string(d) + " in shape", at);
  }
  n.inputs.resize(r.count("inputs", 4));
  for (int32_t& in : n.inputs) {
    at = r.pos();
    in = r.i32("input id");
    if (in < 0 || in >= id)
      r.fail("input id " + std::to_string(in) + " is not an earlier node (ids below " + std::to_string(id) + ")", at);
  }
  n.ints.resize(r.count("ints", 8));
  for (int64_t& x : n.ints) x = r.i64("int attribute");
  n.floats.resize(r.count("floats", 4));
  for (float& x : n.floats) x = r.f32("float attribute");
  n.name = r.str("name");
  return n;
}

FunctionDef read_function(Reader& r) {
  FunctionDef f;
  f.name = r.str("function name");
  r.where += " '" + f.name + "'";
  f.inputs = r.i32s("inputs");
  f.outputs = r.i32s("outputs");
  f.collects.resize(r.count("collects", 1));
  for (Collect& c : f.collects) {
    const size_t at = r.pos();
    const uint8_t v = r.get<uint8_t>("collect");
    if (v > static_cast<uint8_t>(Collect::none)) r.fail("collect code " + std::to_string(v) + " out of range", at);
    c = static_cast<Collect>(v);
  }
  f.updates.resize(r.count("updates", 8));
  for (auto& [var, value] : f.updates) {
    var = r.i32("update variable");
    value = r.i32("update value");
  }
  return f;
}

uint32_t crc_of(const uint8_t* p, size_t n) {
  return static_cast<uint32_t>(crc32_z(crc32_z(0, nullptr, 0), p, n));
}

}  // namespace

std::vector<uint8_t> serialize(const Graph& g, const std::vector<FunctionDef>& fns) {
  Writer w;
  w.out.resize(kHeaderSize);  // filled in once the payload is known
  w.count(g.size());
  for (const Node& n : g.nodes()) write_node(w, n);
  w.count(fns.size());
  for (const FunctionDef& f : fns) write_function(w, f);

  Writer h;
  h.out.assign(kMagic, kMagic + 8);
  h.put(kFormatVersion);
  const size_t payload = w.out.size() - kHeaderSize;
  h.put(static_cast<uint64_t>(payload));
  h.put(crc_of(w.out.data() + kHeaderSize, payload));
  std::memcpy(w.out.data(), h.out.data(), kHeaderSize);
  return std::move(w.out);
}

std::vector<FunctionDef> deserialize(const uint8_t* data, size_t size, Graph& into) {
  if (into.size() != 0)
    throw ArgumentError("deserialize: the target graph must be empty, it has " +
                        std::to_string(into.size()) + " nodes");
  if (data == nullptr && size != 0) throw ArgumentError("deserialize: null buffer of nonzero size");
  if (size < kHeaderSize)
    throw FormatError("deserialize: truncated header: " + std::to_string(size) + " bytes, the header alone is " +
                      std::to_string(kHeaderSize));
  if (std::memcmp(data, kMagic, 8) != 0)
    throw FormatError("deserialize: bad magic at offset 0 (not a synk graph; expected \"SYNKGRPH\")");

  Reader h(data, 8, kHeaderSize);
  h.where = "header";
  const uint32_t version = h.get<uint32_t>("version");
  if (version != kFormatVersion)
    throw FormatError("deserialize: format version " + std::to_string(version) + ", this build reads version " +
                      std::to_string(kFormatVersion));
  const uint64_t payload = h.get<uint64_t>("payload size");
  const uint32_t crc = h.get<uint32_t>("crc");
  if (payload != size - kHeaderSize)
    throw FormatError("deserialize: header at offset 12 says the payload is " + std::to_string(payload) +
                      " bytes, but " + std::to_string(size - kHeaderSize) + " follow the header");
  const uint32_t actual = crc_of(data + kHeaderSize, payload);
  if (crc != actual)
    throw FormatError("deserialize: CRC mismatch (header " + std::to_string(crc) + ", payload " +
                      std::to_string(actual) + "): the buffer is corrupted");

  // Parse and check everything before touching the graph.
  Reader r(data, kHeaderSize, size);
  const size_t nodes = r.count("node", kMinNodeBytes);
  std::vector<Node> parsed;
  parsed.reserve(nodes);
  for (size_t i = 0; i < nodes; ++i) {
    r.where = "node " + std::to_string(i);
    parsed.push_back(read_node(r, static_cast<int32_t>(i)));
  }
  r.where = "payload";
  const size_t nfns = r.count("function", kMinFunctionBytes);
  std::vector<FunctionDef> fns;
  fns.reserve(nfns);
  for (size_t i = 0; i < nfns; ++i) {
    r.where = "function " + std::to_string(i);
    fns.push_back(read_function(r));
  }
  r.where = "payload";
  if (r.left() != 0) r.fail(std::to_string(r.left()) + " unread trailing bytes", r.pos());
  // The graph's own checks may throw other Error kinds; from here a bad
  // buffer is still a format problem.
  for (size_t i = 0; i < fns.size(); ++i) {
    try {
      validate_function_def(parsed, fns[i]);
    } catch (const Error& e) {
      throw FormatError("deserialize: function " + std::to_string(i) + " is invalid: " + e.what());
    }
  }
  // Graph::add_node refuses empty or repeated names; checking first leaves
  // `into` untouched on every FormatError.
  std::unordered_set<std::string_view> names;
  for (size_t i = 0; i < parsed.size(); ++i) {
    const Node& n = parsed[i];
    if ((n.op == Op::Input || n.op == Op::Variable) && (n.name.empty() || !names.insert(n.name).second))
      throw FormatError("deserialize: node " + std::to_string(i) + " (" + op_name(n.op) + ") has " +
                        (n.name.empty() ? "an empty name" : "the repeated name '" + n.name + "'"));
  }
  for (size_t i = 0; i < parsed.size(); ++i) {
    try {
      into.add_node(std::move(parsed[i]));
    } catch (const Error& e) {
      throw FormatError("deserialize: node " + std::to_string(i) + " rejected by the graph: " + e.what());
    }
  }
  return fns;
}

}  // namespace synk
