// Unit tests of the runtime's wire formats (src/wire/wire.hpp) beyond
// the call command (tests/test_faults.cpp): the result format a worker
// writes and the master reads, the node masters' blobs (a call's results,
// the fork and call stamps, a map's results) and a variable's value. Each
// decoder gets its encoder's bytes back, then short and corrupt copies: it
// refuses them with FormatError and never reads past the bytes it was
// given. The bytes under test end at a PROT_NONE page, so a read past them
// crashes the test instead of passing unnoticed (also without ASan).
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "wire/wire.hpp"

namespace {

using namespace synk;
namespace detail = synk::detail;

// Two pages, the second PROT_NONE: copy(bytes) puts them right before it.
class Guarded {
 public:
  Guarded() {
    page_ = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    size_ = 64 * page_;
    void* m = ::mmap(nullptr, size_ + page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<uint8_t*>(m);
    ::mprotect(base_ + size_, page_, PROT_NONE);
  }
  ~Guarded() { ::munmap(base_, size_ + page_); }
  // n bytes of `b` ending at the guard page (n <= b.size()).
  const uint8_t* copy(const std::vector<uint8_t>& b, size_t n) {
    uint8_t* p = base_ + size_ - n;
    if (n) std::memcpy(p, b.data(), n);
    return p;
  }
  const uint8_t* copy(const std::vector<uint8_t>& b) { return copy(b, b.size()); }
  // Where n bytes ending at the guard page start (to write into).
  uint8_t* end_space(size_t n) { return base_ + size_ - n; }

 private:
  uint8_t* base_ = nullptr;
  size_t page_ = 0, size_ = 0;
};

// A result of two outputs (f32 2x3, i32 5), written by write_result.
std::vector<uint8_t> good_result() {
  detail::ShareResult r;
  r.ran = true;
  r.rows = 7;
  Array a(f32, {2, 3});
  for (int i = 0; i < 6; ++i) a.data<float>()[i] = static_cast<float>(i) + 0.5f;
  Array b(i32, {5});
  for (int i = 0; i < 5; ++i) b.data<int32_t>()[i] = 10 * i;
  r.outs.push_back(std::move(a));
  r.outs.push_back(std::move(b));
  std::vector<uint8_t> buf(detail::result_bytes({{f32, {2, 3}}, {i32, {5}}}));
  EXPECT_EQ(detail::write_result(r, buf.data(), buf.size()), buf.size());
  return buf;
}

void expect_good_result(const detail::ResultView& v) {
  ASSERT_TRUE(v.ran);
  EXPECT_EQ(v.rows, 7);
  ASSERT_EQ(v.outs.size(), 2u);
  EXPECT_EQ(v.outs[0].dtype, f32);
  EXPECT_EQ(v.outs[0].shape, (Shape{2, 3}));
  EXPECT_EQ(static_cast<const float*>(v.outs[0].data)[5], 5.5f);
  EXPECT_EQ(v.outs[1].dtype, i32);
  EXPECT_EQ(v.outs[1].shape, (Shape{5}));
  EXPECT_EQ(static_cast<const int32_t*>(v.outs[1].data)[4], 40);
}

// Decoding `f` either works or throws FormatError: nothing else (no
// bad_alloc from a huge count, no crash).
template <class F> bool refused(F&& f) {
  try {
    f();
    return false;
  } catch (const FormatError&) {
    return true;
  }
}

TEST(WireResult, RoundTrip) {
  Guarded g;
  const std::vector<uint8_t> b = good_result();
  expect_good_result(detail::read_result(g.copy(b), b.size()));
}

TEST(WireResult, ReadChecksTheCapacityBeforeTheHeader) {
  // A buffer shorter than the result head: nothing of it may be read.
  Guarded g;
  const std::vector<uint8_t> b = good_result();
  for (size_t cap : {size_t{0}, size_t{4}, size_t{12}, size_t{20}, size_t{63}})
    EXPECT_THROW(detail::read_result(g.copy(b, cap), cap), FormatError) << cap;
}

TEST(WireResult, TruncatedIsRefused) {
  Guarded g;
  const std::vector<uint8_t> b = good_result();
  for (size_t cut = 0; cut < b.size(); ++cut) {
    try {
      detail::read_result(g.copy(b, cut), cut);
      ADD_FAILURE() << "a result cut to " << cut << " of " << b.size() << " bytes was read";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("result buffer"), std::string::npos) << e.what();
    }
  }
}

TEST(WireResult, CorruptFieldsAreRefused) {
  Guarded g;
  const std::vector<uint8_t> good = good_result();
  // The named fields: the count, the first output's dtype, dim count and a
  // dim: each made absurd is refused.
  auto with = [&](size_t at, auto v) {
    std::vector<uint8_t> bad = good;
    std::memcpy(bad.data() + at, &v, sizeof v);
    return bad;
  };
  for (const std::vector<uint8_t>& bad :
       {with(16, uint32_t{3}), with(16, uint32_t{0xffffffff}), with(64, uint32_t{99}), with(68, uint32_t{0xffffffff}),
        with(68, uint32_t{40}), with(72, int64_t{-1}), with(72, int64_t{1} << 40), with(80, int64_t{1} << 61)})
    EXPECT_TRUE(refused([&] { detail::read_result(g.copy(bad), bad.size()); }));
  // Every byte set to a few values: decoded or refused, never past the end.
  int n_refused = 0;
  for (size_t i = 0; i < 128; ++i)
    for (uint8_t v : {uint8_t{0xff}, uint8_t{0x80}, uint8_t{0x07}}) {
      std::vector<uint8_t> bad = good;
      bad[i] = v;
      n_refused += refused([&] { detail::read_result(g.copy(bad), bad.size()); });
    }
  EXPECT_GT(n_refused, 20);
}

TEST(WireResult, WriteRefusesASmallBuffer) {
  // The writer never writes past its buffer either: the guard page is
  // right after the space it is given.
  Guarded g;
  const std::vector<uint8_t> b = good_result();
  detail::ResultView v = detail::read_result(b.data(), b.size());
  for (size_t cap : {size_t{0}, size_t{64}, b.size() - 1})
    EXPECT_THROW(detail::write_result_view(v, g.end_space(cap), cap), BackendError) << cap;
  EXPECT_EQ(detail::write_result_view(v, g.end_space(b.size()), b.size()), b.size());
}

TEST(WireNodeResults, RoundTripAndTruncation) {
  const std::vector<uint8_t> r = good_result();
  const detail::ResultView v = detail::read_result(r.data(), r.size());
  detail::ResultView empty;
  const std::vector<uint8_t> blob = detail::encode_node_results({v, empty});
  std::vector<detail::ResultView> all;
  detail::decode_node_results(blob.data(), blob.size(), 1, 2, all);
  ASSERT_EQ(all.size(), 2u);
  expect_good_result(all[0]);
  EXPECT_FALSE(all[1].ran);
  EXPECT_TRUE(all[1].outs.empty());
  // Another rank count than the node has: refused.
  all.clear();
  EXPECT_THROW(detail::decode_node_results(blob.data(), blob.size(), 1, 3, all), FormatError);
  Guarded g;
  for (size_t cut = 0; cut < blob.size(); ++cut) {
    all.clear();
    EXPECT_THROW(detail::decode_node_results(g.copy(blob, cut), cut, 1, 2, all), FormatError) << cut;
  }
  // A rank's byte count past the blob.
  std::vector<uint8_t> bad = blob;
  const uint64_t huge = uint64_t{1} << 60;
  std::memcpy(bad.data() + 64, &huge, 8);
  all.clear();
  EXPECT_THROW(detail::decode_node_results(g.copy(bad), bad.size(), 1, 2, all), FormatError);
}

TEST(WireStamps, ForkStampRoundTripAndRefusals) {
  detail::ForkStamp s;
  s.ranks = 3;
  s.device = Device::cuda;
  s.comm = 2;
  s.deterministic = 1;
  s.seed = 12345;
  s.chunks = 8;
  s.gpus = 4;
  s.host = 1;
  s.devices = 0xabcdef;
  s.exe_size = 999;
  std::strcpy(s.exe, "trainer");
  std::vector<uint8_t> b(detail::kForkStampBytes);
  detail::encode_fork_stamp(s, b.data());
  Guarded g;
  const detail::ForkStamp o = detail::decode_fork_stamp(g.copy(b), b.size(), 1);
  EXPECT_TRUE(o.same(s));
  EXPECT_EQ(o.ranks, 3);
  EXPECT_EQ(o.gpus, 4);
  EXPECT_EQ(o.host, 1);
  EXPECT_EQ(o.devices, 0xabcdefu);
  EXPECT_EQ(o.describe(), s.describe());
  // Another size (another build of synk) is refused, naming the node.
  for (size_t cut : {size_t{0}, size_t{8}, b.size() - 1}) {
    try {
      detail::decode_fork_stamp(g.copy(b, cut), cut, 1);
      ADD_FAILURE() << cut;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("node 1"), std::string::npos) << e.what();
    }
  }
  // A device byte that is no synk::Device is refused, naming the node.
  b[4] = 7;
  try {
    detail::decode_fork_stamp(g.copy(b), b.size(), 2);
    ADD_FAILURE() << "device 7 accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("node 2: device 7"), std::string::npos) << e.what();
  }
  b[4] = static_cast<uint8_t>(Device::cuda);
  // A program name without its NUL is cut inside the field.
  std::memset(b.data() + detail::kForkStampBytes - 64, 'A', 64);
  const detail::ForkStamp cut = detail::decode_fork_stamp(g.copy(b), b.size(), 0);
  EXPECT_EQ(std::strlen(cut.exe), 63u);
}

TEST(WireStamps, CallStampRoundTripAndRefusals) {
  detail::CallStamp s;
  std::strcpy(s.kind, "collective");
  s.a = 7;
  s.b = 9;
  std::strcpy(s.text, "all_reduce");
  std::vector<uint8_t> b(detail::kCallStampBytes);
  detail::encode_call_stamp(s, b.data());
  Guarded g;
  const detail::CallStamp o = detail::decode_call_stamp(g.copy(b), b.size(), 2);
  EXPECT_TRUE(o.same(s));
  EXPECT_EQ(o.describe(), "collective all_reduce");
  for (size_t cut : {size_t{0}, size_t{16}, b.size() - 1})
    EXPECT_THROW(detail::decode_call_stamp(g.copy(b, cut), cut, 2), FormatError) << cut;
  // Neither text NUL-terminated: both cut inside their fields.
  std::memset(b.data(), 'k', 16);
  std::memset(b.data() + 32, 't', 96);
  const detail::CallStamp u = detail::decode_call_stamp(g.copy(b), b.size(), 2);
  EXPECT_EQ(std::strlen(u.kind), 15u);
  EXPECT_EQ(std::strlen(u.text), 95u);
}

TEST(WireJobResults, RoundTripAndTruncation) {
  detail::Writer w;
  const std::vector<std::string> results = {"", "a", "twelve bytes", std::string(100, 'x')};
  for (const std::string& r : results)
    detail::append_job_result(w, {reinterpret_cast<const uint8_t*>(r.data()), r.size()});
  const std::vector<uint8_t> blob = detail::encode_job_results("", w.buf);
  Guarded g;
  const detail::JobResults j = detail::decode_job_results(g.copy(blob), blob.size(), 0);
  EXPECT_EQ(j.error, "");
  std::vector<std::string> got;
  EXPECT_EQ(detail::read_job_results(j.results, [&](std::span<const uint8_t> r) {
              got.emplace_back(reinterpret_cast<const char*>(r.data()), r.size());
            }),
            results.size());
  EXPECT_EQ(got, results);
  // Cut inside the head or a record: refused (a cut between records reads
  // fewer, which run_jobs_nodes checks against the node's job count); no
  // cut reads past the bytes.
  for (size_t cut = 0; cut < blob.size(); ++cut)
    refused([&] {
      const detail::JobResults t = detail::decode_job_results(g.copy(blob, cut), cut, 0);
      detail::read_job_results(t.results, [](std::span<const uint8_t>) {});
    });
  for (size_t cut : {size_t{0}, size_t{4}, size_t{12}, blob.size() - 1}) {
    EXPECT_TRUE(refused([&] {
      const detail::JobResults t = detail::decode_job_results(g.copy(blob, cut), cut, 0);
      detail::read_job_results(t.results, [](std::span<const uint8_t>) {});
    })) << cut;
  }
  // A record length past the bytes.
  std::vector<uint8_t> bad = blob;
  const uint64_t huge = uint64_t{1} << 62;
  std::memcpy(bad.data() + 8 + 8, &huge, 8);  // the second record's length (the first is empty)
  const detail::JobResults t = detail::decode_job_results(g.copy(bad), bad.size(), 0);
  EXPECT_THROW(detail::read_job_results(t.results, [](std::span<const uint8_t>) {}), FormatError);
  // An error travels whole; an error length past the bytes is refused.
  const std::vector<uint8_t> failed = detail::encode_job_results("job 3 threw", {});
  EXPECT_EQ(detail::decode_job_results(failed.data(), failed.size(), 1).error, "job 3 threw");
  std::vector<uint8_t> long_err = failed;
  std::memcpy(long_err.data(), &huge, 8);
  EXPECT_THROW(detail::decode_job_results(g.copy(long_err), long_err.size(), 1), FormatError);
}

TEST(WireVarValue, CapacityIsChecked) {
  Guarded g;
  std::vector<uint8_t> b(16, 1);
  EXPECT_EQ(detail::read_var_value(g.copy(b), 16, 16), g.copy(b));
  EXPECT_THROW(detail::read_var_value(g.copy(b), 16, 17), FormatError);
  EXPECT_THROW(detail::var_value_slot(g.end_space(8), 8, 9), FormatError);
  EXPECT_GE(detail::var_value_result_bytes(0), 1u);
}

TEST(WireReader, NeverReadsPastItsBytes) {
  Guarded g;
  std::vector<uint8_t> b(6, 0);
  detail::Reader r(g.copy(b), b.size(), "test bytes");
  EXPECT_EQ(r.get<uint32_t>(), 0u);
  try {
    r.get<uint32_t>();
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated test bytes"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.align(8), FormatError);  // the padding is not there
  EXPECT_THROW(r.take(SIZE_MAX), FormatError);  // no overflow past the check
  uint8_t small[8];
  detail::Writer w(small, sizeof small);
  w.put<uint32_t>(1);
  EXPECT_THROW(w.put<uint64_t>(2), BackendError);
}

TEST(WireVarOps, RoundTripAndEveryKindPastTheLastRefused) {
  using detail::VarOpKind;
  std::vector<detail::VarOp> ops;
  for (uint8_t k = 0; k < static_cast<uint8_t>(VarOpKind::kCount); ++k)
    ops.push_back({static_cast<VarOpKind>(k), ReduceOp::max, 1, 7, 0});
  std::vector<uint8_t> b = detail::encode_var_ops(ops, {});
  Guarded g;
  const std::vector<detail::VarOp> back = detail::decode_var_ops(g.copy(b), b.size());
  ASSERT_EQ(back.size(), ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    EXPECT_EQ(back[i].kind, ops[i].kind);
    EXPECT_EQ(back[i].op, ReduceOp::max);
    EXPECT_EQ(back[i].root, 1);
    EXPECT_EQ(back[i].var, 7);
  }
  // The first op's kind byte (after the u32 count): kCount and beyond.
  for (int k : {static_cast<int>(VarOpKind::kCount), 255}) {
    b[4] = static_cast<uint8_t>(k);
    try {
      detail::decode_var_ops(g.copy(b), b.size());
      ADD_FAILURE() << "op kind " << k << " accepted";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("op kind " + std::to_string(k)), std::string::npos) << e.what();
    }
  }
}

}  // namespace
