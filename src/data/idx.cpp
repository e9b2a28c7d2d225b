// src/data/idx.cpp — reads IDX (MNIST-format) files, gzipped or plain, and
// loads the four files of an MNIST-style data set into Arrays.
//
// zlib's gz* API reads plain files transparently, so one code path serves
// both. The header is never trusted for allocation: the element buffer grows
// only as data actually arrives, so a lying header costs at most the bytes
// the file really holds.
#include "synk/idx.hpp"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>

#include "data/user_file.hpp"
#include "synk/error.hpp"

namespace synk {
namespace {

// IDX type code of unsigned bytes, the only element type synk reads.
constexpr uint8_t kTypeU8 = 0x08;
// More dims than this is no real data set; refusing them keeps the header
// read small and the product free of overflow games.
constexpr int kMaxNdim = 16;
// Above this element count (1 TiB) a header is absurd whatever the file.
constexpr uint64_t kMaxElements = uint64_t{1} << 40;
// Bytes read per gzread call while the element buffer grows.
constexpr size_t kChunk = size_t{1} << 20;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw IoError("IDX file '" + path + "': " + what);
}

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

// zlib's message, without the "path: " it puts in front.
std::string zlib_message(gzFile f, const std::string& path, int* code) {
  const char* m = gzerror(f, code);
  std::string msg = m ? m : "unknown zlib error";
  if (msg.rfind(path + ": ", 0) == 0) msg.erase(0, path.size() + 2);
  return msg;
}

// Reads up to n bytes; returns how many arrived (fewer only at end of data).
// A corrupt or cut-off gzip stream is an error, not a short read.
size_t read_some(gzFile f, const std::string& path, uint8_t* dst, size_t n) {
  size_t got = 0;
  int code = Z_OK;
  while (got < n) {
    const unsigned ask = static_cast<unsigned>(std::min(n - got, kChunk));
    const int r = gzread(f, dst + got, ask);
    if (r < 0) fail(path, "corrupt gzip data or read error: " + zlib_message(f, path, &code));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  // zlib reports a gzip stream cut short as Z_BUF_ERROR after returning
  // what it could inflate; that is a truncated file, not a clean end.
  const std::string msg = zlib_message(f, path, &code);
  if (code != Z_OK && code != Z_STREAM_END) fail(path, "truncated or corrupt gzip data: " + msg);
  return got;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

std::string hex_byte(uint8_t b) {
  static const char* digits = "0123456789abcdef";
  return std::string("0x") + digits[b >> 4] + digits[b & 15];
}

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

// `name` or `name.gz` in dir, whichever exists (plain first).
std::string find_file(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path plain = fs::path(dir) / name;
  const fs::path gz = fs::path(dir) / (name + ".gz");
  std::error_code ec;
  if (fs::is_regular_file(plain, ec)) return plain.string();
  if (fs::is_regular_file(gz, ec)) return gz.string();
  // Something else by that name (a FIFO, a directory): read_idx says what.
  if (fs::exists(plain, ec)) return plain.string();
  if (fs::exists(gz, ec)) return gz.string();
  throw IoError("load_mnist: data file missing: tried '" + plain.string() + "' and '" +
                gz.string() + "'");
}

Array to_images(const IdxFile& f, const std::string& path) {
  if (f.dims.size() != 3)
    fail(path, "expected 3 dims [N, rows, cols] for images, got " + dims_str(f.dims));
  Array a(DType::f32, {f.dims[0], 1, f.dims[1], f.dims[2]});
  float* out = a.data<float>();
  // 1/256 rather than 1/255 keeps every value strictly below 1.
  for (size_t i = 0; i < f.bytes.size(); ++i) out[i] = static_cast<float>(f.bytes[i]) * (1.f / 256.f);
  return a;
}

Array to_labels(const IdxFile& f, const std::string& path) {
  if (f.dims.size() != 1)
    fail(path, "expected 1 dim [N] for labels, got " + dims_str(f.dims));
  Array a(DType::i32, {f.dims[0]});
  int32_t* out = a.data<int32_t>();
  for (size_t i = 0; i < f.bytes.size(); ++i) out[i] = f.bytes[i];
  return a;
}

void load_pair(const std::string& dir, const std::string& prefix, Array& images, Array& labels) {
  const std::string ipath = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string lpath = find_file(dir, prefix + "-labels-idx1-ubyte");
  images = to_images(read_idx(ipath), ipath);
  labels = to_labels(read_idx(lpath), lpath);
  if (images.shape()[0] != labels.shape()[0])
    throw IoError("load_mnist: '" + ipath + "' holds " + std::to_string(images.shape()[0]) +
                  " images but '" + lpath + "' holds " + std::to_string(labels.shape()[0]) +
                  " labels");
}

}  // namespace

IdxFile read_idx(const std::string& path) {
  // Never gzopen(path): its plain open() of a named pipe waits for a writer
  // forever.
  std::string why;
  int err = 0;
  const int fd = detail::open_regular_for_read(path, why, err);
  if (fd < 0) fail(path, err == ENOENT ? "missing (no such file)" : why);
  GzPtr f(gzdopen(fd, "rb"));
  if (!f) {
    ::close(fd);  // gzdopen leaves it open when it fails
    fail(path, "cannot open: out of memory");
  }

  uint8_t head[4];
  if (read_some(f.get(), path, head, 4) != 4) fail(path, "truncated header (fewer than 4 bytes)");
  if (head[0] != 0 || head[1] != 0)
    fail(path, "bad magic: first two bytes are " + hex_byte(head[0]) + " " + hex_byte(head[1]) +
                   ", expected 0x00 0x00 (not an IDX file?)");
  if (head[2] != kTypeU8)
    fail(path, "unsupported element type " + hex_byte(head[2]) + " (only unsigned bytes, 0x08)");
  const int ndim = head[3];
  if (ndim < 1 || ndim > kMaxNdim)
    fail(path, "implausible number of dims " + std::to_string(ndim) + " (1.." +
                   std::to_string(kMaxNdim) + " supported)");

  uint8_t raw[4 * kMaxNdim];
  if (read_some(f.get(), path, raw, 4u * ndim) != 4u * ndim)
    fail(path, "truncated header (file ends inside the " + std::to_string(ndim) + " dims)");
  IdxFile out;
  uint64_t count = 1;
  for (int i = 0; i < ndim; ++i) {
    const uint32_t d = be32(raw + 4 * i);
    out.dims.push_back(d);
    // Checked before multiplying, so the product can never overflow.
    if (d != 0 && count > kMaxElements / d)
      fail(path, "absurd dims: the product of " + dims_str(out.dims) + " exceeds 2^40 elements");
    count *= d;
  }

  // Grow as data arrives; the header alone never decides the allocation.
  const size_t want = static_cast<size_t>(count);
  size_t have = 0;
  while (have < want) {
    const size_t next = std::min(want, std::max(have * 2, have + kChunk));
    out.bytes.resize(next);
    const size_t got = read_some(f.get(), path, out.bytes.data() + have, next - have);
    have += got;
    if (have < next) {
      fail(path, "truncated data: dims " + dims_str(out.dims) + " need " + std::to_string(want) +
                     " bytes, file has " + std::to_string(have));
    }
  }
  uint8_t extra;
  if (read_some(f.get(), path, &extra, 1) != 0)
    fail(path, "trailing data after the " + std::to_string(want) + " bytes of dims " +
                   dims_str(out.dims));
  return out;
}

MnistSet load_mnist(const std::string& dir) {
  MnistSet s;
  load_pair(dir, "train", s.train_images, s.train_labels);
  load_pair(dir, "t10k", s.test_images, s.test_labels);
  return s;
}

}  // namespace synk
