// Tests of the IDX reader and load_mnist: good and broken files (plain and
// gzipped) written to a temporary directory, plus the installed Fashion-MNIST
// set when the machine has it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "support/watchdog.hpp"
#include "synk/idx.hpp"

namespace fs = std::filesystem;

namespace {

// A fresh directory, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "synk_idx_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
                               uint8_t type = 0x08) {
  std::vector<uint8_t> b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<uint8_t> iota_bytes(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i * 7);
  return v;
}

void write_plain(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

uint32_t crc32_of(const std::vector<uint8_t>& b) {
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t x : b) {
    c ^= x;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// A gzip file of stored (uncompressed) deflate blocks, built by hand: the
// test binary does not link zlib, and this checks the reader against the
// format itself (RFC 1951/1952) rather than against zlib's own writer.
std::vector<uint8_t> gzip_stored(const std::vector<uint8_t>& b) {
  std::vector<uint8_t> out = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
  auto le = [&](uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  size_t pos = 0;
  do {
    const auto n = static_cast<uint32_t>(std::min<size_t>(b.size() - pos, 65535));
    out.push_back(pos + n == b.size() ? 1 : 0);  // BFINAL, BTYPE 00
    le(n, 2);
    le(~n & 0xFFFFu, 2);
    out.insert(out.end(), b.begin() + static_cast<std::ptrdiff_t>(pos), b.begin() + static_cast<std::ptrdiff_t>(pos + n));
    pos += n;
  } while (pos < b.size());
  le(crc32_of(b), 4);
  le(static_cast<uint32_t>(b.size()), 4);
  return out;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& b) { write_plain(path, gzip_stored(b)); }

// Expects IoError whose message names the file and contains `what`.
void expect_io_error(const std::function<void()>& fn, const std::string& file, const std::string& what) {
  try {
    fn();
    ADD_FAILURE() << "no IoError; expected one mentioning '" << what << "'";
  } catch (const synk::IoError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(file), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

void expect_read_error(const std::string& path, const std::string& what) {
  expect_io_error([&] { synk::read_idx(path); }, path, what);
}

}  // namespace

TEST(Idx, ReadsPlainFile) {
  TempDir dir;
  const auto data = iota_bytes(6);
  write_plain(dir / "a", idx_bytes({2, 3}, data));
  const synk::IdxFile f = synk::read_idx(dir / "a");
  EXPECT_EQ(f.dims, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.bytes, data);
}

TEST(Idx, ReadsGzipFileWithOrWithoutSuffix) {
  TempDir dir;
  const auto data = iota_bytes(4 * 5 * 6, 3);
  write_gz(dir / "a.gz", idx_bytes({4, 5, 6}, data));
  write_gz(dir / "b", idx_bytes({4, 5, 6}, data));  // gzip magic, no suffix
  for (const char* name : {"a.gz", "b"}) {
    const synk::IdxFile f = synk::read_idx(dir / name);
    EXPECT_EQ(f.dims, (std::vector<int64_t>{4, 5, 6})) << name;
    EXPECT_EQ(f.bytes, data) << name;
  }
}

TEST(Idx, ReadsDeflateCompressedFile) {
  // Python: gzip.compress(header + bytes((i // 8) % 3 * 100 for i in
  // range(120)), 9, mtime=0) for an IDX file of dims [3, 40]; a fixed
  // Huffman block, so the inflate path is covered without the data set.
  const std::vector<uint8_t> gz = {
      0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x63, 0x60, 0xe0, 0x60,
      0x62, 0x60, 0x60, 0x60, 0x06, 0x62, 0x0d, 0x06, 0x28, 0x48, 0x81, 0x82, 0x13, 0x50,
      0x40, 0x6b, 0x71, 0x00, 0xb9, 0xd3, 0x2d, 0x14, 0x84, 0x00, 0x00, 0x00};
  TempDir dir;
  write_plain(dir / "c.gz", gz);
  const synk::IdxFile f = synk::read_idx(dir / "c.gz");
  EXPECT_EQ(f.dims, (std::vector<int64_t>{3, 40}));
  ASSERT_EQ(f.bytes.size(), 120u);
  for (size_t i = 0; i < 120; ++i) EXPECT_EQ(f.bytes[i], (i / 8) % 3 * 100) << i;
}

TEST(Idx, ReadsLargerThanOneChunk) {
  // More than the reader's 1 MiB growth step, so the buffer grows in stages.
  TempDir dir;
  const auto data = iota_bytes(3 * 1000 * 1000, 1);
  write_gz(dir / "big.gz", idx_bytes({3, 1000, 1000}, data));
  const synk::IdxFile f = synk::read_idx(dir / "big.gz");
  EXPECT_EQ(f.dims, (std::vector<int64_t>{3, 1000, 1000}));
  EXPECT_EQ(f.bytes, data);
}

TEST(Idx, ZeroSizedDimIsEmpty) {
  TempDir dir;
  write_plain(dir / "e", idx_bytes({0, 28, 28}, {}));
  const synk::IdxFile f = synk::read_idx(dir / "e");
  EXPECT_EQ(f.dims, (std::vector<int64_t>{0, 28, 28}));
  EXPECT_TRUE(f.bytes.empty());
}

TEST(Idx, MissingFile) {
  TempDir dir;
  expect_read_error(dir / "nope", "missing");
  expect_read_error(dir.str(), "directory");
}

// Issue 25, item 6: gzopen's plain open() of a named pipe waited for a
// writer forever. Every special file is refused at once, naming its kind;
// each read runs in a child under a 5 s alarm, so a hang fails the test.
TEST(Idx, RefusesFifosSocketsAndDevicesAtOnce) {
  TempDir dir;
  synk_test::make_fifo(dir / "fifo");
  synk_test::make_socket(dir / "sock");
  const std::vector<std::pair<std::string, std::string>> files = {
      {dir / "fifo", "is a named pipe (FIFO), not a regular file"},
      {dir / "sock", "is a socket, not a regular file"},
      {"/dev/null", "is a character device, not a regular file"},
      {"/dev/zero", "is a character device, not a regular file"}};
  for (const auto& [path, kind] : files) {
    const synk_test::WatchedOutcome r = synk_test::io_error_of([&] { synk::read_idx(path); });
    EXPECT_FALSE(r.hung) << path << ": " << r.text;
    EXPECT_NE(r.text.find("IoError: IDX file '" + path + "': " + kind), std::string::npos) << r.text;
  }
  // load_mnist finds a FIFO by its name and says what it is (it used to
  // skip it and call the file missing).
  TempDir set;
  synk_test::make_fifo(set / "train-images-idx3-ubyte");
  synk_test::make_fifo(set / "train-labels-idx1-ubyte");
  const synk_test::WatchedOutcome r = synk_test::io_error_of([&] { synk::load_mnist(set.str()); });
  EXPECT_FALSE(r.hung) << r.text;
  EXPECT_NE(r.text.find("IoError: IDX file '" + (set / "train-images-idx3-ubyte") +
                        "': is a named pipe (FIFO), not a regular file"),
            std::string::npos)
      << r.text;
}

TEST(Idx, EmptyAndShortHeader) {
  TempDir dir;
  write_plain(dir / "empty", {});
  expect_read_error(dir / "empty", "truncated header");
  write_plain(dir / "short", {0, 0, 8, 2, 0, 0});  // ends inside the dims
  expect_read_error(dir / "short", "truncated header");
}

TEST(Idx, BadMagic) {
  TempDir dir;
  auto b = idx_bytes({2}, {1, 2});
  b[1] = 0x01;
  write_plain(dir / "m", b);
  expect_read_error(dir / "m", "bad magic");
  write_plain(dir / "text", std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', '\n'});
  expect_read_error(dir / "text", "bad magic");
}

TEST(Idx, UnsupportedElementType) {
  TempDir dir;
  write_plain(dir / "f", idx_bytes({1}, {0, 0, 0, 0}, 0x0D));  // float
  expect_read_error(dir / "f", "unsupported element type 0x0d");
}

TEST(Idx, ImplausibleNdim) {
  TempDir dir;
  write_plain(dir / "z", {0, 0, 8, 0});
  expect_read_error(dir / "z", "number of dims 0");
  write_plain(dir / "many", idx_bytes(std::vector<uint32_t>(40, 1), {7}));
  expect_read_error(dir / "many", "number of dims 40");
}

TEST(Idx, TruncatedData) {
  TempDir dir;
  auto b = idx_bytes({3, 4}, iota_bytes(11));  // one byte short
  write_plain(dir / "t", b);
  expect_read_error(dir / "t", "truncated data");
  write_gz(dir / "t.gz", b);
  expect_read_error(dir / "t.gz", "truncated data");
}

TEST(Idx, TrailingData) {
  TempDir dir;
  auto b = idx_bytes({3, 4}, iota_bytes(13));  // one byte too many
  write_plain(dir / "t", b);
  expect_read_error(dir / "t", "trailing data");
  write_gz(dir / "t.gz", b);
  expect_read_error(dir / "t.gz", "trailing data");
}

TEST(Idx, BrokenGzipStream) {
  TempDir dir;
  const auto gz = gzip_stored(idx_bytes({100, 100}, iota_bytes(10000)));
  auto cut = gz;
  cut.resize(gz.size() / 2);
  write_plain(dir / "cut.gz", cut);
  expect_read_error(dir / "cut.gz", "gzip");
  auto bad_crc = gz;
  bad_crc[gz.size() - 6] ^= 1;  // the stored CRC32
  write_plain(dir / "crc.gz", bad_crc);
  expect_read_error(dir / "crc.gz", "gzip");
}

TEST(Idx, AbsurdDims) {
  TempDir dir;
  // 2^48 elements: refused from the header alone.
  write_plain(dir / "huge", idx_bytes({65536, 65536, 65536}, {1, 2, 3}));
  expect_read_error(dir / "huge", "absurd dims");
  // Plausible but far larger than the file: must end as truncated, after
  // reading only what the file holds (no 4 GB allocation).
  write_plain(dir / "big", idx_bytes({0xFFFFFFFFu}, {1, 2, 3}));
  expect_read_error(dir / "big", "truncated data");
  write_gz(dir / "big.gz", idx_bytes({0xFFFFFFFFu}, {1, 2, 3}));
  expect_read_error(dir / "big.gz", "truncated data");
}

// ---- load_mnist ----------------------------------------------------------------

namespace {

// A small data set in dir: train n_train images rows x cols, test n_test.
void write_set(const TempDir& dir, uint32_t n_train, uint32_t n_train_labels, uint32_t n_test, uint32_t rows,
               uint32_t cols) {
  write_plain(dir / "train-images-idx3-ubyte", idx_bytes({n_train, rows, cols}, iota_bytes(n_train * rows * cols)));
  write_gz(dir / "train-labels-idx1-ubyte.gz", idx_bytes({n_train_labels}, iota_bytes(n_train_labels)));
  write_gz(dir / "t10k-images-idx3-ubyte.gz", idx_bytes({n_test, rows, cols}, iota_bytes(n_test * rows * cols, 5)));
  write_plain(dir / "t10k-labels-idx1-ubyte", idx_bytes({n_test}, {9, 0}));
}

}  // namespace

TEST(IdxMnist, LoadsMixedPlainAndGzip) {
  TempDir dir;
  write_set(dir, 3, 3, 2, 4, 5);
  const synk::MnistSet s = synk::load_mnist(dir.str());
  EXPECT_EQ(s.train_images.shape(), (synk::Shape{3, 1, 4, 5}));
  EXPECT_EQ(s.train_images.dtype(), synk::DType::f32);
  EXPECT_EQ(s.train_labels.shape(), (synk::Shape{3}));
  EXPECT_EQ(s.train_labels.dtype(), synk::DType::i32);
  EXPECT_EQ(s.test_images.shape(), (synk::Shape{2, 1, 4, 5}));
  EXPECT_EQ(s.test_labels.shape(), (synk::Shape{2}));

  const float* px = s.train_images.data<float>();
  const auto raw = iota_bytes(60);
  for (size_t i = 0; i < raw.size(); ++i) EXPECT_EQ(px[i], raw[i] / 256.f) << i;
  EXPECT_EQ(s.train_labels.to_vector<int32_t>(), (std::vector<int32_t>{0, 7, 14}));
  EXPECT_EQ(s.test_images.data<float>()[0], 5.f / 256.f);
  EXPECT_EQ(s.test_labels.to_vector<int32_t>(), (std::vector<int32_t>{9, 0}));
}

TEST(IdxMnist, MaxPixelStaysBelowOne) {
  TempDir dir;
  write_set(dir, 1, 1, 2, 1, 1);
  write_plain(dir / "train-images-idx3-ubyte", idx_bytes({1, 1, 1}, {255}));
  const synk::MnistSet s = synk::load_mnist(dir.str());
  EXPECT_EQ(s.train_images.data<float>()[0], 255.f / 256.f);
}

TEST(IdxMnist, MismatchedCounts) {
  TempDir dir;
  write_set(dir, 3, 4, 2, 4, 5);
  try {
    synk::load_mnist(dir.str());
    ADD_FAILURE() << "no IoError";
  } catch (const synk::IoError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("3 images"), std::string::npos) << msg;
    EXPECT_NE(msg.find("4 labels"), std::string::npos) << msg;
    EXPECT_NE(msg.find("train-labels-idx1-ubyte.gz"), std::string::npos) << msg;
  }
}

TEST(IdxMnist, MissingFileNamesPathsTried) {
  TempDir dir;
  write_set(dir, 3, 3, 2, 4, 5);
  fs::remove(dir / "t10k-images-idx3-ubyte.gz");
  expect_io_error([&] { synk::load_mnist(dir.str()); }, dir / "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz");
  expect_io_error([&] { synk::load_mnist(dir / "no-such-dir"); }, "train-images-idx3-ubyte", "missing");
}

TEST(IdxMnist, WrongNdim) {
  TempDir dir;
  write_set(dir, 3, 3, 2, 4, 5);
  write_plain(dir / "train-images-idx3-ubyte", idx_bytes({3, 20}, iota_bytes(60)));
  expect_io_error([&] { synk::load_mnist(dir.str()); }, "train-images-idx3-ubyte", "expected 3 dims");
  write_set(dir, 3, 3, 2, 4, 5);
  write_plain(dir / "t10k-labels-idx1-ubyte", idx_bytes({2, 1}, {1, 2}));
  expect_io_error([&] { synk::load_mnist(dir.str()); }, "t10k-labels-idx1-ubyte", "expected 1 dim");
}

TEST(IdxMnist, InstalledFashionMnist) {
  const std::string dir = synk::kDefaultMnistDir;
  if (!fs::exists(fs::path(dir) / "train-images-idx3-ubyte.gz") &&
      !fs::exists(fs::path(dir) / "train-images-idx3-ubyte"))
    GTEST_SKIP() << "no MNIST-style data set installed at " << dir;
  const synk::MnistSet s = synk::load_mnist(dir);
  EXPECT_EQ(s.train_images.shape(), (synk::Shape{60000, 1, 28, 28}));
  EXPECT_EQ(s.train_labels.shape(), (synk::Shape{60000}));
  EXPECT_EQ(s.test_images.shape(), (synk::Shape{10000, 1, 28, 28}));
  EXPECT_EQ(s.test_labels.shape(), (synk::Shape{10000}));
  for (const synk::Array* labels : {&s.train_labels, &s.test_labels}) {
    std::vector<int64_t> per_class(10, 0);
    for (int32_t l : labels->to_vector<int32_t>()) {
      ASSERT_TRUE(l >= 0 && l <= 9) << l;
      ++per_class[l];
    }
    // Fashion-MNIST (and MNIST) use every class.
    for (int c = 0; c < 10; ++c) EXPECT_GT(per_class[c], 0) << "class " << c;
  }
  for (const synk::Array* images : {&s.train_images, &s.test_images}) {
    const float* p = images->data<float>();
    float lo = 1, hi = 0;
    for (int64_t i = 0; i < images->numel(); ++i) {
      lo = std::min(lo, p[i]);
      hi = std::max(hi, p[i]);
    }
    EXPECT_EQ(lo, 0.f);
    EXPECT_EQ(hi, 255.f / 256.f);
  }
}
