// Tests of checkpoints (synk/checkpoint.hpp): the .npz format (layout,
// round trips bit for bit, ZIP64, every truncation and every single-byte
// corruption of a small archive), atomic writes (a writer killed mid-write
// by SIGXFSZ leaves the previous file intact), and saving/loading a
// Session and a Runtime (N ranks to M ranks, a failed runtime, mismatched
// files change nothing, training resumes exactly). tests/python/ checks that
// numpy reads what synk writes and the other way round.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data/npz_internal.hpp"
#include "runtime/fork_server.hpp"
#include "support/npz_sample.hpp"
#include "support/proc_probe.hpp"
#include "support/runtime_helpers.hpp"
#include "support/watchdog.hpp"
#include "synk/synk.hpp"

namespace {

using namespace synk;
namespace fs = std::filesystem;

// A fresh folder, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "synk-ckpt-XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

Array f32_array(Shape shape, float scale, float offset) { return synk_test::ramp(std::move(shape), scale, offset); }
VarValues sample_values() { return synk_test::npz_sample(); }

std::vector<uint8_t> bits(const Array& a) {
  const auto* p = static_cast<const uint8_t*>(a.raw());
  return {p, p + a.nbytes()};
}

void expect_same(const VarValues& got, const VarValues& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first) << what;
    EXPECT_EQ(got[i].second.dtype(), want[i].second.dtype()) << what << " " << want[i].first;
    EXPECT_EQ(got[i].second.shape(), want[i].second.shape()) << what << " " << want[i].first;
    EXPECT_EQ(bits(got[i].second), bits(want[i].second)) << what << " " << want[i].first;
  }
}

std::string message_of(const std::vector<uint8_t>& b, const std::string& label = "ck.npz") {
  try {
    decode_npz(b.data(), b.size(), label);
  } catch (const IoError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Lowers the ZIP64 threshold for a scope.
struct Zip64Everywhere {
  uint64_t saved = detail::npz_zip64_threshold;
  Zip64Everywhere() { detail::npz_zip64_threshold = 0; }
  ~Zip64Everywhere() { detail::npz_zip64_threshold = saved; }
};

// ---- the format ---------------------------------------------------------------------------

TEST(Npz, RoundTripBitForBit) {
  const VarValues v = sample_values();
  const std::vector<uint8_t> b = encode_npz(v);
  expect_same(decode_npz(b.data(), b.size()), v, "decoded");
  EXPECT_EQ(encode_npz(v), b) << "the same values must give the same bytes";
  const VarValues none;
  const std::vector<uint8_t> empty = encode_npz(none);
  EXPECT_EQ(empty.size(), 22u);  // an end record alone
  EXPECT_TRUE(decode_npz(empty.data(), empty.size()).empty());
}

TEST(Npz, LayoutIsWhatNumpyWrites) {
  const std::vector<uint8_t> b = encode_npz({{"l1/W", f32_array({3, 4}, 1, 0)}});
  ASSERT_GE(b.size(), 30u);
  EXPECT_EQ(std::string(b.begin(), b.begin() + 4), std::string("PK\x03\x04"));
  const std::string name(b.begin() + 30, b.begin() + 38);
  EXPECT_EQ(name, "l1/W.npy");
  // The member: magic, version 1.0, header length, the dict padded to 64.
  const size_t m = 38;
  EXPECT_EQ(std::string(b.begin() + m, b.begin() + m + 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t hlen = b[m + 8] | (b[m + 9] << 8);
  EXPECT_EQ((10 + hlen) % 64, 0u);
  const std::string dict(b.begin() + m + 10, b.begin() + m + 10 + hlen);
  EXPECT_EQ(dict.substr(0, dict.find('}') + 1), "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }");
  EXPECT_EQ(dict.back(), '\n');
  float first;
  std::memcpy(&first, &b[m + 10 + hlen + 4], 4);
  EXPECT_EQ(first, 1.f);  // element [0][1]
  // Shapes of 1 and 0 dims, and i32.
  for (const auto& [value, text] : std::vector<std::pair<Array, std::string>>{
           {Array(i32, {5}), "{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }"},
           {Array::scalar_f32(1), "{'descr': '<f4', 'fortran_order': False, 'shape': (), }"}}) {
    const std::vector<uint8_t> c = encode_npz({{"a", value}});
    const std::string s(c.begin(), c.end());
    EXPECT_TRUE(contains(s, text)) << text;
  }
}

TEST(Npz, Zip64RoundTrip) {
  const VarValues v = sample_values();
  std::vector<uint8_t> b;
  {
    Zip64Everywhere z;
    b = encode_npz(v);
  }
  EXPECT_TRUE(contains(std::string(b.begin(), b.end()), std::string("PK\x06\x06", 4))) << "no ZIP64 end record";
  expect_same(decode_npz(b.data(), b.size()), v, "zip64");
}

TEST(Npz, EveryTruncationIsAnErrorNamingTheFile) {
  const VarValues v = {{"first", f32_array({40}, 1, 0)}, {"second", f32_array({40}, 2, 0)}};
  const std::vector<uint8_t> b = encode_npz(v);
  for (size_t n = 0; n < b.size(); ++n) {
    const std::vector<uint8_t> cut(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string m = message_of(cut);
    EXPECT_TRUE(contains(m, "decode_npz: 'ck.npz'")) << n << " bytes: " << m;
  }
  // Cut inside the second member's data: that variable is named.
  const std::string s(b.begin(), b.end());
  const size_t second = s.find("second.npy");
  const std::vector<uint8_t> cut(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(second + 100));
  const std::string m = message_of(cut);
  EXPECT_TRUE(contains(m, "variable 'second'")) << m;
  EXPECT_TRUE(contains(m, "truncated")) << m;
  EXPECT_TRUE(contains(message_of({}), "empty file")) << message_of({});
}

TEST(Npz, HugeSizesAreRefusedNotTrusted) {
  // A local header alone (no directory) whose ZIP64 extra claims ~2^64 bytes.
  std::vector<uint8_t> b = {'P', 'K', 3, 4, 45, 0, 0, 0, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0,
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 5, 0, 20, 0,
                            'a', '.', 'n', 'p', 'y', 1, 0, 16, 0};
  for (int i = 0; i < 16; ++i) b.push_back(0xf0);
  b.resize(b.size() + 40, 0);
  const std::string m = message_of(b);
  EXPECT_TRUE(contains(m, "variable 'a': truncated") && contains(m, "run past the end of the file")) << m;
}

TEST(Npz, EveryCorruptedByteIsCaughtOrHarmless) {
  const VarValues v = {{"a", f32_array({3}, 1, 0)}, {"b", Array(i32, {2})}};
  const std::vector<uint8_t> b = encode_npz(v);
  int caught = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    std::vector<uint8_t> c = b;
    c[i] ^= 0x5a;
    try {
      // A byte nothing depends on (a date, "made by", attributes) may
      // change; what is read must still be exactly what was written.
      expect_same(decode_npz(c.data(), c.size()), v, "byte " + std::to_string(i));
    } catch (const IoError& e) {
      ++caught;
      EXPECT_TRUE(contains(e.what(), "'<memory>'")) << e.what();
    }
  }
  EXPECT_GT(caught, static_cast<int>(b.size()) * 3 / 4);
  // Data corrupted: the CRC names the variable.
  std::vector<uint8_t> c = b;
  c[std::string(b.begin(), b.end()).find("PK\x01\x02") - 1] ^= 1;  // b's last byte

  const std::string m = message_of(c);
  EXPECT_TRUE(contains(m, "variable 'b'") && contains(m, "CRC-32 mismatch")) << m;
}

TEST(Npz, RefusesBadNames) {
  EXPECT_THROW(encode_npz({{"", Array(f32, {1})}}), ArgumentError);
  EXPECT_THROW(encode_npz({{"a", Array(f32, {1})}, {"a", Array(f32, {2})}}), ArgumentError);
  EXPECT_THROW(encode_npz({{std::string("a\0b", 3), Array(f32, {1})}}), ArgumentError);
}

// ---- files and atomic writes ------------------------------------------------------------

TEST(NpzFile, WriteReadAndReplace) {
  TempDir d;
  const std::string p = d / "ck.npz";
  write_npz(p, sample_values());
  expect_same(read_npz(p), sample_values(), "read back");
  EXPECT_EQ(file_bytes(p), encode_npz(sample_values()));
  const VarValues other = {{"x", Array(i32, {2})}};
  write_npz(p, other);
  expect_same(read_npz(p), other, "replaced");
  EXPECT_EQ(d.files(), std::vector<std::string>{"ck.npz"}) << "a temporary file was left behind";

  try {
    read_npz(d / "missing.npz");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.what(), "read_npz: '" + d / "missing.npz" + "': cannot open")) << e.what();
  }
  try {
    write_npz(d / "no/such/dir/ck.npz", other);
    FAIL();
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.what(), "write_npz: '" + d / "no/such/dir/ck.npz" + "'")) << e.what();
  }
  EXPECT_THROW(read_npz(d.path.string()), IoError);  // a folder
}

// Runs fn in a child with a file-size limit; returns its wait status.
template <class F>
int in_child_with_size_limit(rlim_t bytes, bool ignore_sigxfsz, F fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    rlimit none{0, 0}, lim{bytes, bytes};
    ::setrlimit(RLIMIT_CORE, &none);
    ::setrlimit(RLIMIT_FSIZE, &lim);
    if (ignore_sigxfsz) ::signal(SIGXFSZ, SIG_IGN);
    ::_exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

TEST(NpzFile, AWriterKilledMidWriteLeavesThePreviousFile) {
  TempDir d;
  const std::string p = d / "ck.npz";
  const VarValues old = {{"W", f32_array({100}, 1, 0)}};
  write_npz(p, old);
  const VarValues big = {{"W", f32_array({100000}, 2, 0)}};
  // The kernel kills the writer (SIGXFSZ) when its file passes 64 KiB:
  // a crash in the middle of the write.
  const int st = in_child_with_size_limit(64 << 10, false, [&] {
    write_npz(p, big);
    return 0;
  });
  ASSERT_TRUE(WIFSIGNALED(st)) << "the writer was not killed";
  EXPECT_EQ(WTERMSIG(st), SIGXFSZ);
  expect_same(read_npz(p), old, "after the crash");
  // What the crash leaves: the temporary file, which nothing reads.
  const std::vector<std::string> files = d.files();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_TRUE(files[1].starts_with("ck.npz.tmp-")) << files[1];
  fs::remove(d.path / files[1]);

  // The same write failing with an error (EFBIG): IoError naming the file,
  // the temporary file removed, the previous file intact.
  const int st2 = in_child_with_size_limit(64 << 10, true, [&] {
    try {
      write_npz(p, big);
    } catch (const IoError& e) {
      const std::string m = e.what();
      return contains(m, "write_npz: '" + p + "'") && contains(m, "unchanged") ? 0 : 2;
    }
    return 1;
  });
  ASSERT_TRUE(WIFEXITED(st2));
  EXPECT_EQ(WEXITSTATUS(st2), 0);
  expect_same(read_npz(p), old, "after the failed write");
  EXPECT_EQ(d.files(), std::vector<std::string>{"ck.npz"});
}

// ---- sessions --------------------------------------------------------------------------------

// A small regression model trained with Nesterov momentum (state variables).
struct Model {
  Graph g;
  Tensor x, y, loss;
  nn::Dense l1, l2;
  std::vector<Update> ups;
  explicit Model(int64_t hidden = 5) {
    x = g.input("x", f32, {batch, 3});
    y = g.input("y", f32, {batch, 1});
    l1 = nn::dense(g, "l1", 3, hidden, Init::uniform(-0.5f, 0.5f), Init::uniform(-0.1f, 0.1f));
    l2 = nn::dense(g, "l2", hidden, 1, Init::uniform(-0.5f, 0.5f));
    loss = mean(square(l2(tanh(l1(x))) - y));
    std::vector<Tensor> p = {l1.W, l1.b, l2.W, l2.b};
    ups = optim::nesterov(p, grad(loss, p), {.lr = 0.05f, .momentum = 0.9f});
  }
  FunctionSpec spec() { return {"train", {x, y}, {{loss}}, ups}; }
};

Array inputs_x() { return synk_test::rows_of(16); }
Array targets_y() {
  Array y(f32, {16, 1});
  for (int i = 0; i < 16; ++i) y.data<float>()[i] = std::sin(static_cast<float>(i));
  return y;
}

VarValues all_values(const Session& s) {
  VarValues out;
  for (const Node& n : s.graph().nodes())
    if (n.op == Op::Variable) out.emplace_back(n.name, s.get(n.name));
  return out;
}

// The special files a reader or writer must refuse at once, with the kind
// each is reported as. /dev/null and /dev/zero are read only: a writer of
// the code before the fix would rename its file over them.
struct SpecialFile {
  std::string path, kind;
};
std::vector<SpecialFile> special_files(const TempDir& d) {
  synk_test::make_fifo(d / "fifo.npz");
  synk_test::make_socket(d / "sock.npz");
  return {{d / "fifo.npz", "is a named pipe (FIFO), not a regular file"},
          {d / "sock.npz", "is a socket, not a regular file"},
          {"/dev/null", "is a character device, not a regular file"},
          {"/dev/zero", "is a character device, not a regular file"}};
}

void expect_refused(const synk_test::WatchedOutcome& r, const std::string& who, const SpecialFile& f) {
  EXPECT_FALSE(r.hung) << who << " on " << f.path << ": " << r.text;
  EXPECT_TRUE(contains(r.text, "IoError: " + who + ": '" + f.path + "': " + f.kind)) << r.text;
}

// Issue 25, item 6: a plain open() of a named pipe waited for a writer
// forever; a socket was "cannot open: No such device or address".
TEST(NpzFile, ReadersRefuseFifosSocketsAndDevicesAtOnce) {
  TempDir d;
  Model m;
  Session s(m.g, {.seed = 3});
  for (const SpecialFile& f : special_files(d)) {
    expect_refused(synk_test::io_error_of([&] { read_npz(f.path); }), "read_npz", f);
    expect_refused(synk_test::io_error_of([&] { load_checkpoint(f.path, s); }), "load_checkpoint", f);
  }
}

// A checkpoint is renamed over its target: over a FIFO, a socket or a
// device that deleted it (as root, /dev/null itself). Refused, and the
// file stays what it was.
TEST(NpzFile, WritersRefuseFifosSocketsAndDevices) {
  TempDir d;
  Model m;
  Session s(m.g, {.seed = 3});
  std::vector<SpecialFile> files = special_files(d);
  files.resize(2);  // not the real /dev/null and /dev/zero (see special_files)
  // A device of our own, where this process may make one (as root).
  if (::mknod((d / "null.npz").c_str(), S_IFCHR | 0600, ::makedev(1, 3)) == 0)
    files.push_back({d / "null.npz", "is a character device, not a regular file"});
  else
    std::printf("(no device of our own: mknod: %s)\n", std::strerror(errno));
  const std::vector<std::string> before = d.files();
  for (const SpecialFile& f : files) {
    struct stat st0 {};
    ASSERT_EQ(::stat(f.path.c_str(), &st0), 0);
    expect_refused(synk_test::io_error_of([&] { write_npz(f.path, sample_values()); }), "write_npz", f);
    expect_refused(synk_test::io_error_of([&] { save_checkpoint(f.path, s); }), "save_checkpoint", f);
    struct stat st {};
    ASSERT_EQ(::stat(f.path.c_str(), &st), 0) << f.path << " was removed";
    EXPECT_EQ(st.st_mode & S_IFMT, st0.st_mode & S_IFMT) << f.path << " was replaced";
  }
  EXPECT_EQ(d.files(), before) << "a temporary file was left behind";
}

TEST(Checkpoint, SessionSavesParametersAndOptimizerState) {
  TempDir d;
  Model m;
  Session s(m.g, {.seed = 3});
  Function train = s.function(m.spec());
  const Array X = inputs_x(), Y = targets_y();
  for (int i = 0; i < 3; ++i) train({X, Y});
  save_checkpoint(d / "ck.npz", s);
  const VarValues file = read_npz(d / "ck.npz");
  std::vector<std::string> names;
  for (const auto& [n, a] : file) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"l1/W", "l1/b", "l2/W", "l2/b", "l1/W/velocity", "l1/b/velocity",
                                             "l2/W/velocity", "l2/b/velocity"}));
  expect_same(file, all_values(s), "file");
  EXPECT_NE(bits(s.get("l1/W/velocity")), bits(Array(f32, {3, 5}))) << "velocity should be non-zero after steps";
}

TEST(Checkpoint, ResumedTrainingEqualsUninterrupted) {
  TempDir d;
  const Array X = inputs_x(), Y = targets_y();
  Model a;
  Session sa(a.g, {.seed = 3});
  Function ta = sa.function(a.spec());
  for (int i = 0; i < 4; ++i) ta({X, Y});
  save_checkpoint(d / "ck.npz", sa);
  for (int i = 0; i < 4; ++i) ta({X, Y});

  Model b;
  Session sb(b.g, {.seed = 99});  // other initial values: all replaced
  Function tb = sb.function(b.spec());
  load_checkpoint(d / "ck.npz", sb);
  for (int i = 0; i < 4; ++i) tb({X, Y});
  expect_same(all_values(sb), all_values(sa), "resumed vs uninterrupted");
}

TEST(Checkpoint, MismatchedFilesChangeNothing) {
  TempDir d;
  Model m;
  Session s(m.g, {.seed = 3});
  const VarValues before = all_values(s);
  Model other(7);  // hidden 7: l1/W [3, 7]
  Session so(other.g, {.seed = 4});
  save_checkpoint(d / "other.npz", so);
  const std::string p = d / "other.npz";
  try {
    load_checkpoint(p, s);
    FAIL() << "shape mismatch not refused";
  } catch (const ShapeError& e) {
    EXPECT_TRUE(contains(e.what(), "load_checkpoint: '" + p + "': variable 'l1/W' has shape [3, 7] in the file, [3, 5]"))
        << e.what();
  }
  expect_same(all_values(s), before, "after a shape mismatch");

  VarValues v = all_values(s);
  v.back().second = Array(i32, v.back().second.shape());
  write_npz(d / "dtype.npz", v);
  try {
    load_checkpoint(d / "dtype.npz", s);
    FAIL();
  } catch (const TypeError& e) {
    EXPECT_TRUE(contains(e.what(), "variable 'l2/b/velocity' is i32 in the file, f32 in the session")) << e.what();
  }
  v = all_values(s);
  v.emplace_back("l3/W", Array(f32, {1}));
  write_npz(d / "unknown.npz", v);
  try {
    load_checkpoint(d / "unknown.npz", s);
    FAIL();
  } catch (const ArgumentError& e) {
    EXPECT_TRUE(contains(e.what(), "'" + d / "unknown.npz" + "': variable 'l3/W' is not a variable of the session"))
        << e.what();
  }
  // Parameters only: refused unless partial.
  v = all_values(s);
  v.resize(4);
  for (auto& [n, a] : v) a = f32_array(a.shape(), 0.f, 0.5f);
  write_npz(d / "params.npz", v);
  try {
    load_checkpoint(d / "params.npz", s);
    FAIL();
  } catch (const ArgumentError& e) {
    EXPECT_TRUE(contains(e.what(), "the file has no value for variable 'l1/W/velocity' (and 3 more)")) << e.what();
  }
  expect_same(all_values(s), before, "after refused loads");
  // Truncated and corrupted files.
  const std::vector<uint8_t> good = file_bytes(d / "params.npz");
  const std::string text(good.begin(), good.end());
  std::ofstream(d / "cut.npz", std::ios::binary)
      .write(reinterpret_cast<const char*>(good.data()), static_cast<std::streamsize>(text.find("l1/b.npy") + 40));
  try {
    load_checkpoint(d / "cut.npz", s);
    FAIL();
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.what(), "load_checkpoint: '" + d / "cut.npz" + "': variable 'l1/b': truncated")) << e.what();
  }
  std::vector<uint8_t> bad = good;
  bad[text.find("PK\x01\x02") - 1] ^= 0x10;  // the last byte of l2/b
  std::ofstream(d / "bad.npz", std::ios::binary).write(reinterpret_cast<const char*>(bad.data()),
                                                        static_cast<std::streamsize>(bad.size()));
  EXPECT_THROW(load_checkpoint(d / "bad.npz", s), IoError);
  expect_same(all_values(s), before, "after a truncated and a corrupted file");

  load_checkpoint(d / "params.npz", s, {.partial = true});
  EXPECT_EQ(s.get("l1/W").to_vector<float>(), std::vector<float>(15, 0.5f));
  EXPECT_EQ(bits(s.get("l1/W/velocity")), bits(before[4].second));
}

// ---- runtimes ----------------------------------------------------------------------------------

TEST(Checkpoint, RuntimeOfNRanksLoadsWithMRanksAndIntoASession) {
  TempDir d;
  const Array X = inputs_x(), Y = targets_y();
  Model m;
  VarValues saved;
  {
    Runtime rt = synk::fork(synk_test::opts(2));
    ParallelFunction f = rt.function(m.spec());
    EXPECT_THROW(load_checkpoint(d / "none.npz", rt), ArgumentError);  // before distribute()
    EXPECT_THROW(save_checkpoint(d / "none.npz", rt), ArgumentError);
    EXPECT_FALSE(fs::exists(d / "none.npz"));
    rt.distribute();
    for (int i = 0; i < 3; ++i) f({X, Y});
    save_checkpoint(d / "ck.npz", rt);
    saved = rt.snapshot();
  }
  expect_same(read_npz(d / "ck.npz"), saved, "file");
  ASSERT_EQ(saved.size(), 8u);

  Runtime rt = synk::fork(synk_test::opts(3, 11));
  ParallelFunction f = rt.function(m.spec());
  rt.distribute();
  load_checkpoint(d / "ck.npz", rt);
  for (const auto& [name, value] : saved)
    for (int r = 0; r < 3; ++r) EXPECT_EQ(bits(rt.get(name, r)), bits(value)) << name << " rank " << r;
  // A mismatched file leaves every rank as it was.
  Model other(7);
  Session so(other.g, {.seed = 4});
  save_checkpoint(d / "other.npz", so);
  EXPECT_THROW(load_checkpoint(d / "other.npz", rt), ShapeError);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(bits(rt.get("l1/b", r)), bits(saved[1].second));
  rt.close();

  Session s(m.g, {.seed = 5});
  load_checkpoint(d / "ck.npz", s);
  expect_same(all_values(s), saved, "session from a runtime's checkpoint");
}

TEST(Checkpoint, FromAFailedRuntime) {
  TempDir d;
  const Array X = inputs_x(), Y = targets_y();
  Model m;
  Runtime rt = synk::fork(synk_test::opts(3));
  ParallelFunction f = rt.function(m.spec());
  rt.distribute();
  f({X, Y});
  const VarValues before = rt.snapshot();
  const std::vector<int> kids = synk_test::children(detail::fork_server_pid());
  ASSERT_EQ(kids.size(), 2u);
  ::kill(kids[1], SIGKILL);
  bool failed = false;
  for (int i = 0; i < 1000 && !failed; ++i) {
    try {
      rt.get("l1/W", 2);
    } catch (const WorkerError&) {
      failed = true;
    }
  }
  ASSERT_TRUE(failed);
  save_checkpoint(d / "ck.npz", rt);
  expect_same(read_npz(d / "ck.npz"), before, "checkpoint of the failed runtime");
  EXPECT_THROW(load_checkpoint(d / "ck.npz", rt), WorkerError);  // loading needs a working runtime
  rt.close();

  rt = synk::fork(synk_test::opts(2));
  f = rt.function(m.spec());
  rt.distribute();
  load_checkpoint(d / "ck.npz", rt);
  for (int r = 0; r < 2; ++r) EXPECT_EQ(bits(rt.get("l2/W", r)), bits(before[2].second));
}

// ---- a GPU session (label gpu; skipped without a device) ----------------------------------

TEST(GpuCheckpoint, CudaSessionLoadsAndSavesTheSameBits) {
  if (!CudaSession::available()) GTEST_SKIP() << "no CUDA device (or synk built without CUDA)";
  TempDir d;
  const Array X = inputs_x(), Y = targets_y();
  Model m;
  Session cpu(m.g, {.seed = 3});
  Function train = cpu.function(m.spec());
  for (int i = 0; i < 3; ++i) train({X, Y});
  save_checkpoint(d / "cpu.npz", cpu);
  CudaSession gpu(m.g, {.seed = 9});
  load_checkpoint(d / "cpu.npz", gpu);
  for (const auto& [name, value] : all_values(cpu)) EXPECT_EQ(bits(gpu.get(name)), bits(value)) << name;
  save_checkpoint(d / "gpu.npz", gpu);
  EXPECT_EQ(file_bytes(d / "gpu.npz"), file_bytes(d / "cpu.npz"));
  Model other(7);
  Session so(other.g, {.seed = 4});
  save_checkpoint(d / "other.npz", so);
  EXPECT_THROW(load_checkpoint(d / "other.npz", gpu), ShapeError);
  EXPECT_EQ(bits(gpu.get("l1/W")), bits(cpu.get("l1/W")));
}

}  // namespace
