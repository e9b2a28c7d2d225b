// Tests of graph serialisation: exact round trips, and that truncated,
// corrupted or hostile buffers (even with a recomputed, valid CRC) give a
// FormatError, never a crash or a huge allocation.
#include <gtest/gtest.h>

#include "graph/internal.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "synk/error.hpp"
#include "synk/serialize.hpp"

namespace {

using synk::Collect;
using synk::DType;
using synk::FunctionDef;
using synk::Graph;
using synk::Node;
using synk::Op;

constexpr size_t kHeader = 24;  // magic 8, version 4, payload size 8, crc 4

int32_t add(Graph& g, Op op, DType dt, synk::Shape shape, std::vector<int32_t> inputs,
            std::vector<int64_t> ints = {}, std::vector<float> floats = {}, bool flag = false) {
  return synk::make_node(g, op, dt, std::move(shape), std::move(inputs), std::move(ints), std::move(floats), flag)
      .id();
}

// A small training-style graph touching every Node field, odd floats
// included, and three functions (one with updates, one empty).
std::vector<FunctionDef> build(Graph& g) {
  const int32_t x = g.input("x", synk::f32, {synk::batch, 4}).id();
  const int32_t y = g.input("labels", synk::i32, {synk::batch}).id();
  const int32_t W = g.variable("W", {4, 3}, synk::Init::glorot_uniform(1.5f)).id();
  const int32_t b = g.variable("b", {3}, synk::Init::constant(0.1f)).id();
  const int32_t h = add(g, Op::MatMul, synk::f32, {synk::batch, 3}, {x, W}, {0, 0});
  const int32_t z = add(g, Op::Add, synk::f32, {synk::batch, 3}, {h, b});
  const int32_t ce = add(g, Op::SoftmaxCrossEntropy, synk::f32, {synk::batch}, {z, y});
  const int32_t loss = add(g, Op::Mean, synk::f32, {}, {ce}, {0}, {}, false);
  const int32_t keep = add(g, Op::Sum, synk::f32, {synk::batch, 1}, {z}, {1}, {}, true);
  const int32_t mask = add(g, Op::DropoutMask, synk::f32, {synk::batch, 3}, {z}, {2}, {0.25f});
  const int32_t odd = add(g, Op::Constant, synk::f32, {}, {},
                          {}, {std::numeric_limits<float>::quiet_NaN()});
  const int32_t neg0 = add(g, Op::Constant, synk::f32, {}, {}, {}, {-0.f});
  const int32_t big = add(g, Op::Constant, synk::i32, {}, {}, {INT64_MIN, INT64_MAX}, {1e30f});
  const int32_t lr = g.constant(0.5f).id();
  const int32_t step = add(g, Op::Mul, synk::f32, {4, 3}, {W, lr});
  const int32_t newW = add(g, Op::Sub, synk::f32, {4, 3}, {W, step});
  (void)odd, (void)neg0, (void)big;

  FunctionDef train{"train", {x, y}, {loss, keep}, {Collect::avg, Collect::sum}, {{W, newW}}};
  FunctionDef eval{"eval", {y, x}, {z, mask}, {Collect::gather, Collect::none}, {}};
  FunctionDef noop{"", {}, {}, {}, {}};
  return {train, eval, noop};
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;
  return true;
}

void expect_same_graph(const Graph& a, const Graph& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const Node& p = a.nodes()[i];
    const Node& q = b.nodes()[i];
    EXPECT_EQ(p.op, q.op) << "node " << i;
    EXPECT_EQ(p.dtype, q.dtype) << "node " << i;
    EXPECT_EQ(p.flag, q.flag) << "node " << i;
    EXPECT_EQ(p.shape, q.shape) << "node " << i;
    EXPECT_EQ(p.inputs, q.inputs) << "node " << i;
    EXPECT_EQ(p.ints, q.ints) << "node " << i;
    EXPECT_TRUE(same_bits(p.floats, q.floats)) << "node " << i;
    EXPECT_EQ(p.name, q.name) << "node " << i;
  }
}

void expect_same_functions(const std::vector<FunctionDef>& a, const std::vector<FunctionDef>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].inputs, b[i].inputs);
    EXPECT_EQ(a[i].outputs, b[i].outputs);
    EXPECT_EQ(a[i].collects, b[i].collects);
    EXPECT_EQ(a[i].updates, b[i].updates);
  }
}

void put_le(std::vector<uint8_t>& buf, size_t at, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) buf[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// Plain bitwise CRC-32 (the zlib/IEEE polynomial): the test binary does not
// link zlib, and an independent implementation checks the format itself.
uint32_t crc32_of(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// Rewrites the header's payload size and CRC to match the payload as it now
// is, so a corruption gets past the CRC and reaches the parser.
void reseal(std::vector<uint8_t>& buf) {
  const size_t payload = buf.size() - kHeader;
  put_le(buf, 12, payload, 8);
  put_le(buf, 20, crc32_of(buf.data() + kHeader, payload), 4);
}

// Deserialises into a fresh graph; returns the FormatError text, or "" if
// the buffer was accepted. Any other exception fails the test.
std::string error_of(const std::vector<uint8_t>& buf, size_t size) {
  Graph g;
  try {
    synk::deserialize(buf.data(), size, g);
    return "";
  } catch (const synk::FormatError& e) {
    EXPECT_EQ(g.size(), 0u) << "a failed deserialize left nodes in the graph";
    return e.what();
  }
}
std::string error_of(const std::vector<uint8_t>& buf) { return error_of(buf, buf.size()); }

#define EXPECT_FORMAT_ERROR(buf, text)                                         \
  do {                                                                         \
    const std::string msg_ = error_of(buf);                                    \
    EXPECT_NE(msg_, "") << "accepted";                                         \
    EXPECT_NE(msg_.find(text), std::string::npos) << msg_;                     \
  } while (0)

std::vector<uint8_t> sample() {
  Graph g;
  return synk::serialize(g, build(g));
}

}  // namespace

TEST(Serialize, RoundTripIsExact) {
  Graph g;
  const auto fns = build(g);
  const auto buf = synk::serialize(g, fns);
  ASSERT_EQ(std::string(buf.begin(), buf.begin() + 8), "SYNKGRPH");
  auto resealed = buf;  // size and CRC agree with an independent CRC-32
  reseal(resealed);
  EXPECT_EQ(resealed, buf);

  Graph g2;
  const auto fns2 = synk::deserialize(buf.data(), buf.size(), g2);
  expect_same_graph(g, g2);
  expect_same_functions(fns, fns2);
  EXPECT_TRUE(std::isnan(g2.node(10).floats[0]));
  EXPECT_TRUE(std::signbit(g2.node(11).floats[0]));
  EXPECT_EQ(synk::serialize(g2, fns2), buf);

  // The rebuilt graph knows its names and its dropout streams.
  EXPECT_EQ(g2.find("labels").id(), 1);
  EXPECT_EQ(g2.find("W").id(), 2);
  EXPECT_EQ(g2.variables().size(), 2u);
  EXPECT_EQ(g2.next_stream(), 3);
}

TEST(Serialize, EmptyGraphRoundTrips) {
  Graph g;
  const auto buf = synk::serialize(g, {});
  EXPECT_EQ(buf.size(), kHeader + 8);  // two zero counts
  Graph g2;
  EXPECT_TRUE(synk::deserialize(buf.data(), buf.size(), g2).empty());
  EXPECT_EQ(g2.size(), 0u);
}

TEST(Serialize, TargetGraphMustBeEmpty) {
  const auto buf = sample();
  Graph g;
  g.constant(1.f);
  EXPECT_THROW(synk::deserialize(buf.data(), buf.size(), g), synk::ArgumentError);
}

TEST(Serialize, EveryTruncationThrows) {
  const auto buf = sample();
  for (size_t len = 0; len < buf.size(); ++len)
    EXPECT_NE(error_of(buf, len), "") << "prefix of " << len << " bytes accepted";
  // Trailing garbage is refused too.
  auto longer = buf;
  longer.push_back(0);
  EXPECT_FORMAT_ERROR(longer, "payload");
}

TEST(Serialize, EveryResealedTruncationThrows) {
  // A cut payload with a matching header and CRC: the parser must notice.
  const auto buf = sample();
  for (size_t len = kHeader; len < buf.size(); ++len) {
    std::vector<uint8_t> cut(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(len));
    reseal(cut);
    EXPECT_NE(error_of(cut), "") << "resealed prefix of " << len << " bytes accepted";
  }
}

TEST(Serialize, EverySingleByteFlipThrows) {
  const auto buf = sample();
  std::mt19937 rng(42);
  for (size_t i = 0; i < buf.size(); ++i) {
    auto bad = buf;
    bad[i] ^= static_cast<uint8_t>(1 + rng() % 255);
    EXPECT_NE(error_of(bad), "") << "flip at byte " << i << " accepted";
  }
}

TEST(Serialize, RandomCorruptionsThrow) {
  const auto buf = sample();
  std::mt19937 rng(7);
  for (int trial = 0; trial < 500; ++trial) {
    auto bad = buf;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < flips; ++k) bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    if (bad == buf) continue;
    EXPECT_NE(error_of(bad), "") << "trial " << trial;
  }
}

TEST(Serialize, ResealedCorruptionsNeverCrash) {
  // Past the CRC every byte of the payload is attacker-controlled; each must
  // either parse into a valid graph or give a FormatError (error_of fails
  // the test on anything else).
  const auto buf = sample();
  for (size_t i = kHeader; i < buf.size(); ++i) {
    for (uint8_t v : {uint8_t{0x00}, uint8_t{0xFF}, uint8_t{0x80}, static_cast<uint8_t>(buf[i] + 1)}) {
      auto bad = buf;
      bad[i] = v;
      reseal(bad);
      error_of(bad);
    }
  }
}

TEST(Serialize, HugeCountsWithValidCrc) {
  const auto buf = sample();
  auto bad = buf;
  put_le(bad, kHeader, 0xFFFFFFFFu, 4);  // node count
  reseal(bad);
  EXPECT_FORMAT_ERROR(bad, "node count 4294967295");

  bad = buf;
  put_le(bad, kHeader + 8, 0xFFFFFFFFu, 4);  // node 0: shape length
  reseal(bad);
  EXPECT_FORMAT_ERROR(bad, "node 0: shape count 4294967295");

  bad = buf;
  put_le(bad, kHeader + 8, 0x7FFFFFFFu, 4);
  reseal(bad);
  EXPECT_FORMAT_ERROR(bad, "at offset 32");

  // With no functions the payload ends with the function count.
  Graph g;
  build(g);
  bad = synk::serialize(g, {});
  put_le(bad, bad.size() - 4, 0x10000000u, 4);
  reseal(bad);
  EXPECT_FORMAT_ERROR(bad, "function count 268435456");
}

TEST(Serialize, BadHeader) {
  const auto buf = sample();
  auto bad = buf;
  bad[0] = 'X';
  EXPECT_FORMAT_ERROR(bad, "bad magic");

  bad = buf;
  put_le(bad, 8, 2, 4);
  EXPECT_FORMAT_ERROR(bad, "format version 2, this build reads version 1");

  bad = buf;
  put_le(bad, 12, uint64_t{1} << 62, 8);
  EXPECT_FORMAT_ERROR(bad, "payload is");

  bad = buf;
  bad.back() ^= 0x10;
  EXPECT_FORMAT_ERROR(bad, "CRC mismatch");

  EXPECT_FORMAT_ERROR(std::vector<uint8_t>(10, 0), "truncated header");
}

namespace {

// One input "x" [2] as node 0 and a function f(x) -> x (collect avg); the
// payload's layout is then known byte by byte.
std::vector<uint8_t> tiny() {
  Graph g;
  const int32_t x = g.input("x", synk::f32, {2}).id();
  return synk::serialize(g, {FunctionDef{"f", {x}, {x}, {Collect::avg}, {}}});
}
constexpr size_t kOp = kHeader + 4, kDtype = kOp + 2, kFlag = kDtype + 1, kDim0 = kFlag + 1 + 4;
constexpr size_t kInputs = kDim0 + 8;

std::vector<uint8_t> tiny_with(size_t at, uint64_t v, size_t bytes) {
  auto b = tiny();
  put_le(b, at, v, bytes);
  reseal(b);
  return b;
}

}  // namespace

TEST(Serialize, FieldRangesChecked) {
  ASSERT_EQ(error_of(tiny()), "");
  EXPECT_FORMAT_ERROR(tiny_with(kOp, static_cast<uint64_t>(Op::kCount), 2), "node 0: op code");
  EXPECT_FORMAT_ERROR(tiny_with(kDtype, 2, 1), "node 0: dtype code 2");
  EXPECT_FORMAT_ERROR(tiny_with(kFlag, 2, 1), "node 0: flag byte 2");
  EXPECT_FORMAT_ERROR(tiny_with(kDim0, static_cast<uint64_t>(int64_t{-2}), 8), "negative dim -2");
  EXPECT_EQ(error_of(tiny_with(kDim0, static_cast<uint64_t>(synk::batch), 8)), "");
  EXPECT_FORMAT_ERROR(tiny_with(kOp, static_cast<uint64_t>(Op::Constant), 2), "function 0 is invalid");

  // The collect byte sits just before the final (empty) update count.
  auto b = tiny();
  b[b.size() - 5] = 7;
  reseal(b);
  EXPECT_FORMAT_ERROR(b, "collect code 7");

  // An input id naming the node itself: splice one into node 0's inputs.
  b = tiny();
  b[kInputs] = 1;
  const uint8_t id[4] = {0, 0, 0, 0};
  b.insert(b.begin() + static_cast<std::ptrdiff_t>(kInputs + 4), id, id + 4);
  reseal(b);
  EXPECT_FORMAT_ERROR(b, "input id 0 is not an earlier node");
}

TEST(Serialize, RepeatedNameRefused) {
  // Rename "W" (4 bytes: count 1, 'W') to "x" so two leaves share a name.
  auto buf = sample();
  bool found = false;
  for (size_t i = kHeader; i + 5 <= buf.size(); ++i)
    if (buf[i] == 1 && buf[i + 1] == 0 && buf[i + 2] == 0 && buf[i + 3] == 0 && buf[i + 4] == 'W') {
      buf[i + 4] = 'x';
      found = true;
      break;
    }
  ASSERT_TRUE(found);
  reseal(buf);
  EXPECT_FORMAT_ERROR(buf, "repeated name 'x'");
}
