// src/data/npz.cpp — NumPy .npz archives (a ZIP of .npy arrays), the file
// format of synk's checkpoints (synk/checkpoint.hpp).
//
// Writing: one pass, members stored uncompressed as np.savez does, each
// .npy header padded so the data starts 64-byte aligned in the member; ZIP64
// fields only where a size or offset needs them. write_npz streams to a
// temporary file, fsyncs it and renames it over the target.
//
// Reading: the end record, then the central directory, then each member
// through its local header. Every length and offset is checked against the
// bytes the source really holds before anything is allocated or read, so a
// truncated or hostile file costs at most its own size (a deflated member:
// its inflated size, itself bounded by deflate's ratio). Every member's
// CRC-32 is checked; a member's .npy header is parsed even when its CRC is
// wrong (so the fuzzer reaches that code), but a wrong CRC is what is
// reported.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <set>
#include <string_view>
#include <utility>

#include "data/npz_internal.hpp"
#include "data/user_file.hpp"
#include "synk/checkpoint.hpp"
#include "synk/error.hpp"

namespace synk {
namespace detail {
uint64_t npz_zip64_threshold = 0xffffffffu;
}  // namespace detail

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50, kLocator64Sig = 0x07064b50;
constexpr uint32_t kMax32 = 0xffffffffu;
constexpr uint16_t kMax16 = 0xffff;
constexpr size_t kLocalBytes = 30, kCentralBytes = 46, kEndBytes = 22, kEnd64Bytes = 56, kLocator64Bytes = 20;
constexpr uint16_t kFlagEncrypted = 1, kFlagUtf8 = 0x800;
constexpr uint16_t kStored = 0, kDeflated = 8;
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01: fixed, so equal values give equal files
// Deflate's best ratio is about 1032:1; a member claiming more is corrupt.
constexpr uint64_t kMaxInflateRatio = 1032;
constexpr size_t kMaxNdim = 64;
const char kNpyMagic[] = "\x93NUMPY";

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// ---- little-endian fields --------------------------------------------------------

void put16(std::string& b, uint16_t v) {
  for (int i = 0; i < 2; ++i) b.push_back(static_cast<char>(v >> (8 * i)));
}
void put32(std::string& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>(v >> (8 * i)));
}
void put64(std::string& b, uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>(v >> (8 * i)));
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t get32(const uint8_t* p) {
  return uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
}
uint64_t get64(const uint8_t* p) { return uint64_t{get32(p)} | (uint64_t{get32(p + 4)} << 32); }

uint32_t crc_update(uint32_t crc, const void* p, size_t n) {
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(p), n));
}

// ---- errors ----------------------------------------------------------------------

// Where a failure is: the public function, the file, the variable if known.
struct Where {
  const char* who;
  std::string file;
  std::string var;  // empty: the archive as a whole
  [[noreturn]] void fail(const std::string& what) const {
    throw IoError(std::string(who) + ": " + quoted(file) + (var.empty() ? "" : ": variable " + quoted(var)) +
                  ": " + what);
  }
};

// ---- .npy headers ------------------------------------------------------------------

const char* descr_of(DType t) { return t == DType::i32 ? "<i4" : "<f4"; }

std::string shape_tuple(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// Magic, version, length and the dict, padded with spaces and a newline so
// that the data starts at a multiple of 64 bytes (as numpy writes it).
std::string npy_header(DType t, const Shape& shape) {
  std::string dict = std::string("{'descr': '") + descr_of(t) + "', 'fortran_order': False, 'shape': " +
                     shape_tuple(shape) + ", }";
  const bool v2 = dict.size() + 1 + 10 > kMax16;  // only for absurdly many dims
  const size_t prefix = v2 ? 12 : 10;
  const size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict.push_back('\n');
  std::string h(kNpyMagic, 6);
  h.push_back(static_cast<char>(v2 ? 2 : 1));
  h.push_back(0);
  if (v2)
    put32(h, static_cast<uint32_t>(dict.size()));
  else
    put16(h, static_cast<uint16_t>(dict.size()));
  return h + dict;
}

struct NpyInfo {
  DType dtype = DType::f32;
  Shape shape;
  size_t header_bytes = 0;  // magic to the end of the dict: the data starts here
};

// A reader of the Python literal numpy writes as the header:
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class DictParser {
 public:
  DictParser(std::string_view s, const Where& w) : s_(s), w_(w) {}

  NpyInfo parse() {
    NpyInfo info;
    bool have_descr = false, have_order = false, have_shape = false;
    skip();
    expect('{');
    for (;;) {
      skip();
      if (peek() == '}') break;
      const std::string key = string_literal();
      skip();
      expect(':');
      skip();
      if (key == "descr") {
        dup(have_descr, key);
        info.dtype = dtype(string_literal());
      } else if (key == "fortran_order") {
        dup(have_order, key);
        fortran_ = boolean();
      } else if (key == "shape") {
        dup(have_shape, key);
        info.shape = tuple();
      } else {
        bad("unexpected key " + quoted(key) + " (numpy writes only 'descr', 'fortran_order' and 'shape')");
      }
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip();
      if (peek() != '}') bad("expected ',' or '}'");
    }
    ++i_;
    for (; i_ < s_.size(); ++i_)
      if (s_[i_] != ' ' && s_[i_] != '\n' && s_[i_] != '\t' && s_[i_] != '\0') bad("text after the header's '}'");
    if (!have_descr || !have_order || !have_shape) bad("the header lacks 'descr', 'fortran_order' or 'shape'");
    if (fortran_ && std::count_if(info.shape.begin(), info.shape.end(), [](Dim d) { return d != 1; }) > 1)
      w_.fail("Fortran-order arrays are not supported (save numpy.ascontiguousarray(a))");
    return info;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    w_.fail("malformed .npy header at character " + std::to_string(i_) + ": " + what);
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++i_;
  }
  void dup(bool& seen, const std::string& key) {
    if (seen) bad("key " + quoted(key) + " appears twice");
    seen = true;
  }
  std::string string_literal() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string");
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string out(s_.substr(i_ + 1, end - i_ - 1));
    i_ = end + 1;
    return out;
  }
  bool boolean() {
    if (s_.substr(i_, 4) == "True") return i_ += 4, true;
    if (s_.substr(i_, 5) == "False") return i_ += 5, false;
    bad("expected True or False");
  }
  Shape tuple() {
    expect('(');
    Shape shape;
    for (;;) {
      skip();
      if (peek() == ')') break;
      if (peek() < '0' || peek() > '9') bad("expected a dimension (a non-negative integer)");
      uint64_t d = 0;
      while (peek() >= '0' && peek() <= '9') {
        d = d * 10 + static_cast<uint64_t>(peek() - '0');
        if (d > (uint64_t{1} << 62)) bad("dimension too large");
        ++i_;
      }
      if (peek() == 'L') ++i_;  // Python 2 longs
      shape.push_back(static_cast<Dim>(d));
      if (shape.size() > kMaxNdim) bad("more than " + std::to_string(kMaxNdim) + " dimensions");
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      skip();
      if (peek() != ')') bad("expected ',' or ')' in the shape");
    }
    ++i_;
    return shape;
  }
  DType dtype(const std::string& d) const {
    if (d == "<f4") return DType::f32;
    if (d == "<i4") return DType::i32;
    std::string hint;
    if (d == "<f8" || d == "<f2") hint = " (convert with a.astype(numpy.float32))";
    if (d == "<i8" || d == "<i2" || d == "|i1" || d == "<u4" || d == "<u8" || d == "|u1" || d == "|b1")
      hint = " (convert with a.astype(numpy.int32))";
    if (!d.empty() && d[0] == '>') hint = " (big-endian; convert with a.astype(a.dtype.newbyteorder('<')))";
    if (d.find('O') != std::string::npos) hint = " (Python objects: synk never unpickles)";
    w_.fail("dtype " + quoted(d) + " is not supported: synk reads float32 ('<f4') and int32 ('<i4')" + hint);
  }

  std::string_view s_;
  const Where& w_;
  size_t i_ = 0;
  bool fortran_ = false;
};

// How long the header at p (n bytes of the member available) is, 0 if n is
// too short to say: magic, version, then a u16 (1.0) or u32 (2.0, 3.0) length.
size_t npy_header_length(const uint8_t* p, size_t n, uint64_t member_bytes, const Where& w) {
  if (n < 10) w.fail("member of " + std::to_string(member_bytes) + " bytes is too short for a .npy header");
  if (std::memcmp(p, kNpyMagic, 6) != 0) w.fail("not a .npy array (no \\x93NUMPY magic)");
  const uint8_t major = p[6];
  if (major == 1) return 10 + size_t{get16(p + 8)};
  if (major == 2 || major == 3) {
    if (n < 12) w.fail("member too short for a .npy 2.0 header");
    return 12 + size_t{get32(p + 8)};
  }
  w.fail(".npy version " + std::to_string(major) + "." + std::to_string(p[7]) + " is not supported (1.0 to 3.0 are)");
}

NpyInfo parse_npy_header(const uint8_t* p, size_t header_bytes, const Where& w) {
  const size_t prefix = p[6] == 1 ? 10 : 12;
  NpyInfo info = DictParser(std::string_view(reinterpret_cast<const char*>(p) + prefix, header_bytes - prefix), w).parse();
  info.header_bytes = header_bytes;
  return info;
}

// Element count of a parsed shape, or fail if it overflows or exceeds `max`.
uint64_t checked_numel(const Shape& s, uint64_t max) {
  uint64_t n = 1;
  for (Dim d : s) {
    if (d == 0) return 0;
    if (n > max / static_cast<uint64_t>(d)) n = max + 1;
    else n *= static_cast<uint64_t>(d);
  }
  return n;
}

// ---- sources: a buffer or a file -----------------------------------------------------

class Source {
 public:
  virtual ~Source() = default;
  virtual uint64_t size() const = 0;
  // Reads exactly n bytes at off (the caller has checked off + n <= size()).
  virtual void read(uint64_t off, size_t n, void* dst) const = 0;
};

class MemorySource : public Source {
 public:
  MemorySource(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  uint64_t size() const override { return n_; }
  void read(uint64_t off, size_t n, void* dst) const override {
    if (n) std::memcpy(dst, p_ + off, n);
  }

 private:
  const uint8_t* p_;
  size_t n_;
};

class FileSource : public Source {
 public:
  FileSource(int fd, uint64_t size, const Where& w) : fd_(fd), size_(size), w_(w) {}
  uint64_t size() const override { return size_; }
  void read(uint64_t off, size_t n, void* dst) const override {
    auto* out = static_cast<uint8_t*>(dst);
    while (n > 0) {
      const ssize_t r = ::pread(fd_, out, std::min<size_t>(n, size_t{1} << 30), static_cast<off_t>(off));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) w_.fail(std::string("read failed: ") + std::strerror(errno));
      if (r == 0) w_.fail("the file shrank while being read");
      out += r;
      off += static_cast<uint64_t>(r);
      n -= static_cast<size_t>(r);
    }
  }

 private:
  int fd_;
  uint64_t size_;
  const Where& w_;
};

// ---- reading ---------------------------------------------------------------------------

struct Member {
  std::string name;  // as stored, "<var>.npy"
  uint16_t flags = 0, method = 0;
  uint32_t crc = 0;
  uint64_t csize = 0, usize = 0, local = 0;
};

// Replaces the 0xffffffff fields by their values from a ZIP64 extra field
// (id 1: usize, csize, offset, in that order, each only if its field is full).
void apply_zip64(const uint8_t* extra, size_t len, Member& m, bool has_offset, const Where& w) {
  bool need_u = m.usize == kMax32, need_c = m.csize == kMax32, need_o = has_offset && m.local == kMax32;
  if (!need_u && !need_c && !need_o) return;
  size_t i = 0;
  while (i + 4 <= len) {
    const uint16_t id = get16(extra + i), n = get16(extra + i + 2);
    if (i + 4 + n > len) break;
    if (id == 1) {
      const uint8_t* p = extra + i + 4;
      size_t k = 0;
      auto take = [&](uint64_t& field) {
        if (k + 8 > n) w.fail("ZIP64 extra field too short");
        field = get64(p + k);
        k += 8;
      };
      if (need_u) take(m.usize);
      if (need_c) take(m.csize);
      if (need_o) take(m.local);
      return;
    }
    i += 4 + size_t{n};
  }
  w.fail("sizes marked as ZIP64 but no ZIP64 extra field");
}

// Why a file without an end record is broken: walks the local headers from
// the start to name the member that is cut off.
[[noreturn]] void diagnose_truncation(const Source& src, Where w) {
  const uint64_t size = src.size();
  if (size == 0) w.fail("empty file (0 bytes): not a .npz archive");
  uint8_t h[kLocalBytes];
  uint64_t pos = 0;
  std::string last;
  while (pos + 4 <= size) {
    src.read(pos, 4, h);
    if (get32(h) != kLocalSig) break;
    if (pos + kLocalBytes > size) {
      w.fail("truncated at byte " + std::to_string(size) + ", inside the header of the member after " +
             (last.empty() ? "the start" : "variable " + quoted(last)));
    }
    src.read(pos, kLocalBytes, h);
    Member m;
    m.flags = get16(h + 6);
    m.csize = get32(h + 18);
    m.usize = get32(h + 22);
    const uint16_t nlen = get16(h + 26), xlen = get16(h + 28);
    if (pos + kLocalBytes + nlen + xlen > size)
      w.fail("truncated at byte " + std::to_string(size) + ", inside a member's header");
    std::string name(nlen, '\0'), extra(xlen, '\0');
    src.read(pos + kLocalBytes, nlen, name.data());
    src.read(pos + kLocalBytes + nlen, xlen, extra.data());
    w.var = name.size() > 4 && name.ends_with(".npy") ? name.substr(0, name.size() - 4) : name;
    if (m.csize == kMax32 || m.usize == kMax32) {
      // A local ZIP64 extra holds both sizes, usize first.
      m.usize = m.csize = kMax32;
      apply_zip64(reinterpret_cast<const uint8_t*>(extra.data()), extra.size(), m, false, w);
    }
    if (m.flags & 8) w.fail("truncated or not a .npz archive: no ZIP end record (file of " + std::to_string(size) + " bytes)");
    const uint64_t data = pos + kLocalBytes + nlen + xlen;
    if (m.csize > size - data)
      w.fail("truncated: the member's " + std::to_string(m.csize) + " bytes from byte " + std::to_string(data) +
             " run past the end of the file (" + std::to_string(size) + " bytes)");
    const uint64_t end = data + m.csize;
    last = w.var;
    w.var.clear();
    pos = end;
  }
  if (pos == 0) w.fail("not a .npz archive (no ZIP signature at the start; " + std::to_string(size) + " bytes)");
  w.fail("truncated: the ZIP directory at the end is missing or cut off (the file ends " +
         std::to_string(size - pos) + " bytes after the last whole member, variable " + quoted(last) + ")");
}

struct Directory {
  std::vector<Member> members;
  uint64_t data_end = 0;  // where the central directory starts: members lie before it
};

Directory read_directory(const Source& src, const Where& w) {
  const uint64_t size = src.size();
  if (size < kEndBytes) diagnose_truncation(src, w);
  const size_t tail_len = static_cast<size_t>(std::min<uint64_t>(size, kEndBytes + kMax16));
  std::vector<uint8_t> tail(tail_len);
  src.read(size - tail_len, tail_len, tail.data());
  // The end record: its signature, with the comment length reaching exactly
  // to the end of the file.
  size_t at = std::string::npos;
  for (size_t i = tail_len - kEndBytes + 1; i-- > 0;) {
    if (get32(&tail[i]) == kEndSig && i + kEndBytes + get16(&tail[i + 20]) == tail_len) {
      at = i;
      break;
    }
  }
  if (at == std::string::npos) diagnose_truncation(src, w);
  const uint8_t* e = &tail[at];
  const uint64_t end_pos = size - tail_len + at;
  // Disk numbers: 0, or 0xffff where a ZIP64 record holds them.
  for (int f : {4, 6})
    if (get16(e + f) != 0 && get16(e + f) != kMax16) w.fail("multi-volume ZIP archives are not supported");
  uint64_t count = get16(e + 10), cd_size = get32(e + 12), cd_off = get32(e + 16);
  uint64_t cd_limit = end_pos;
  if (end_pos >= kLocator64Bytes) {
    uint8_t loc[kLocator64Bytes];
    src.read(end_pos - kLocator64Bytes, kLocator64Bytes, loc);
    if (get32(loc) == kLocator64Sig) {
      const uint64_t e64 = get64(loc + 8);
      if (e64 > end_pos - kLocator64Bytes || end_pos - kLocator64Bytes - e64 < kEnd64Bytes)
        w.fail("corrupt ZIP64 end locator (offset " + std::to_string(e64) + ")");
      uint8_t r[kEnd64Bytes];
      src.read(e64, kEnd64Bytes, r);
      if (get32(r) != kEnd64Sig) w.fail("corrupt ZIP64 end record (bad signature)");
      if (get32(r + 16) != 0 || get32(r + 20) != 0) w.fail("multi-volume ZIP archives are not supported");
      count = get64(r + 32);
      cd_size = get64(r + 40);
      cd_off = get64(r + 48);
      cd_limit = e64;
    }
  }
  if (cd_off > cd_limit || cd_size > cd_limit - cd_off)
    w.fail("corrupt ZIP directory: offset " + std::to_string(cd_off) + " + size " + std::to_string(cd_size) +
           " runs past its end record at byte " + std::to_string(cd_limit) + " (truncated or damaged file)");
  if (count > cd_size / kCentralBytes)
    w.fail("corrupt ZIP directory: " + std::to_string(count) + " entries cannot fit in " + std::to_string(cd_size) +
           " bytes");
  std::vector<uint8_t> cd(static_cast<size_t>(cd_size));
  src.read(cd_off, cd.size(), cd.data());

  Directory dir;
  dir.data_end = cd_off;
  size_t p = 0;
  for (uint64_t k = 0; k < count; ++k) {
    if (p + kCentralBytes > cd.size() || get32(&cd[p]) != kCentralSig)
      w.fail("corrupt ZIP directory: entry " + std::to_string(k) + " is damaged");
    const uint8_t* c = &cd[p];
    Member m;
    m.flags = get16(c + 8);
    m.method = get16(c + 10);
    m.crc = get32(c + 16);
    m.csize = get32(c + 20);
    m.usize = get32(c + 24);
    const size_t nlen = get16(c + 28), xlen = get16(c + 30), clen = get16(c + 32);
    m.local = get32(c + 42);
    if (p + kCentralBytes + nlen + xlen + clen > cd.size())
      w.fail("corrupt ZIP directory: entry " + std::to_string(k) + " runs past the directory");
    m.name.assign(reinterpret_cast<const char*>(c + kCentralBytes), nlen);
    Where mw = w;
    mw.var = m.name;
    if (get16(c + 34) != 0 && get16(c + 34) != kMax16) mw.fail("multi-volume ZIP archives are not supported");
    apply_zip64(c + kCentralBytes + nlen, xlen, m, true, mw);
    dir.members.push_back(std::move(m));
    p += kCentralBytes + nlen + xlen + clen;
  }
  return dir;
}

// Reads one member into an Array. The member's data (header + elements)
// lies at [data, data + csize) of the source.
Array read_member(const Source& src, const Member& m, uint64_t data, const Where& w) {
  std::vector<uint8_t> inflated;  // a deflated member's bytes
  auto fetch = [&](uint64_t off, size_t n, void* dst) {  // off within the member's bytes
    if (m.method == kStored)
      src.read(data + off, n, dst);
    else if (n)
      std::memcpy(dst, inflated.data() + off, n);
  };
  if (m.method == kDeflated) {
    if (m.usize > m.csize * kMaxInflateRatio + 1024)
      w.fail("claims " + std::to_string(m.usize) + " bytes inflated from " + std::to_string(m.csize) +
             " compressed (corrupt)");
    std::vector<uint8_t> packed(static_cast<size_t>(std::max<uint64_t>(m.csize, 1)));
    src.read(data, static_cast<size_t>(m.csize), packed.data());
    // The output grows as data really arrives (never to a size only
    // claimed), up to one byte past the directory's size to catch excess.
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) w.fail("zlib's inflateInit2 failed");
    z.next_in = packed.data();
    uint64_t in_left = m.csize, have = 0;
    constexpr uint64_t kStep = uint64_t{1} << 30, kGrow = uint64_t{1} << 20;
    int rc = Z_OK;
    do {
      if (z.avail_in == 0) {
        z.avail_in = static_cast<uInt>(std::min(in_left, kStep));
        in_left -= z.avail_in;
      }
      if (have == inflated.size()) {
        if (have > m.usize) break;
        inflated.resize(static_cast<size_t>(std::min(have + std::max<uint64_t>(kGrow, have), m.usize + 1)));
      }
      z.next_out = inflated.data() + have;
      z.avail_out = static_cast<uInt>(std::min<uint64_t>(inflated.size() - have, kStep));
      const uInt room = z.avail_out;
      rc = inflate(&z, Z_NO_FLUSH);
      have += room - z.avail_out;
    } while (rc == Z_OK);
    const std::string msg = z.msg ? z.msg : "";
    in_left += z.avail_in;
    inflateEnd(&z);
    if (have > m.usize)
      w.fail("compressed data inflates to more than the " + std::to_string(m.usize) + " bytes the directory says");
    if (rc != Z_STREAM_END)
      w.fail("corrupt compressed data" + (msg.empty() ? std::string(" (the deflate stream ends early)") : ": " + msg));
    if (have != m.usize || in_left != 0)
      w.fail("compressed data inflates to " + std::to_string(have) + " bytes, the directory says " +
             std::to_string(m.usize) + (in_left ? " (and is followed by stray bytes)" : ""));
    inflated.resize(static_cast<size_t>(have));
  }

  uint32_t crc = crc_update(0, nullptr, 0);
  Array out;
  std::exception_ptr parse_error;
  try {
    const size_t first = static_cast<size_t>(std::min<uint64_t>(m.usize, 12));
    uint8_t lead[12] = {};
    fetch(0, first, lead);
    const size_t hlen = npy_header_length(lead, first, m.usize, w);
    if (hlen > m.usize)
      w.fail(".npy header of " + std::to_string(hlen) + " bytes runs past the member's " + std::to_string(m.usize) +
             " (truncated or corrupt)");
    std::vector<uint8_t> header(hlen);
    fetch(0, hlen, header.data());
    crc = crc_update(crc, header.data(), header.size());
    const NpyInfo info = parse_npy_header(header.data(), hlen, w);
    const uint64_t data_bytes = m.usize - hlen;
    const uint64_t numel = checked_numel(info.shape, data_bytes / 4 + 1);
    if (numel * 4 != data_bytes)
      w.fail("the .npy header says " + std::string(dtype_name(info.dtype)) + " " + to_string(info.shape) +
             (numel > data_bytes / 4 ? " (more elements than the data holds)" : " (" + std::to_string(numel * 4) + " bytes)") +
             " but the member holds " + std::to_string(data_bytes) + " bytes of data");
    try {
      out = Array(info.dtype, info.shape);
    } catch (const Error& e) {
      w.fail(std::string("shape refused: ") + e.what());
    }
    fetch(hlen, out.nbytes(), out.raw());
    crc = crc_update(crc, out.raw(), out.nbytes());
  } catch (const IoError&) {
    parse_error = std::current_exception();
  }
  if (parse_error) {
    // A parse error in a member whose CRC is wrong is most likely the
    // corruption's consequence: say so.
    crc = crc_update(0, nullptr, 0);
    std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(m.usize, 1 << 16)));
    for (uint64_t done = 0; done < m.usize;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.usize - done));
      fetch(done, n, buf.data());
      crc = crc_update(crc, buf.data(), n);
      done += n;
    }
    if (crc != m.crc) w.fail("CRC-32 mismatch: the data is corrupted");
    std::rethrow_exception(parse_error);
  }
  if (crc != m.crc) w.fail("CRC-32 mismatch: the data is corrupted");
  return out;
}

VarValues decode(const Source& src, const Where& w) {
  Directory dir = read_directory(src, w);
  VarValues out;
  std::set<std::string> seen;
  for (const Member& m : dir.members) {
    Where mw = w;
    mw.var = m.name;
    if (m.name.size() <= 4 || !m.name.ends_with(".npy"))
      mw.fail("member is not a .npy array (a .npz holds '<name>.npy' members only)");
    mw.var = m.name.substr(0, m.name.size() - 4);
    if (mw.var.find('\0') != std::string::npos) mw.fail("the name holds a NUL byte");
    if (!seen.insert(mw.var).second) mw.fail("appears twice in the archive");
    if (m.flags & kFlagEncrypted) mw.fail("encrypted members are not supported");
    if (m.method != kStored && m.method != kDeflated)
      mw.fail("compression method " + std::to_string(m.method) + " is not supported (stored and deflate are)");
    if (m.method == kStored && m.csize != m.usize)
      mw.fail("stored member with compressed size " + std::to_string(m.csize) + " != size " + std::to_string(m.usize));
    if (m.local > dir.data_end || dir.data_end - m.local < kLocalBytes)
      mw.fail("local header offset " + std::to_string(m.local) + " is outside the archive's data");
    uint8_t h[kLocalBytes];
    src.read(m.local, kLocalBytes, h);
    if (get32(h) != kLocalSig) mw.fail("no local header at byte " + std::to_string(m.local) + " (corrupt)");
    const uint64_t nlen = get16(h + 26), xlen = get16(h + 28);
    const uint64_t data = m.local + kLocalBytes + nlen + xlen;
    if (nlen != m.name.size() || data > dir.data_end || m.csize > dir.data_end - data)
      mw.fail("member runs past the archive's data (truncated or corrupt)");
    std::string local_name(nlen, '\0');
    src.read(m.local + kLocalBytes, nlen, local_name.data());
    if (local_name != m.name) mw.fail("local header names " + quoted(local_name) + " (corrupt)");
    out.emplace_back(mw.var, read_member(src, m, data, mw));
  }
  return out;
}

// ---- writing -----------------------------------------------------------------------------

class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(const void* p, size_t n) = 0;
  uint64_t pos = 0;
  void put(const std::string& s) { put(s.data(), s.size()); }
  void put(const void* p, size_t n) {
    write(p, n);
    pos += n;
  }
};

class VectorSink : public Sink {
 public:
  std::vector<uint8_t> bytes;
  void write(const void* p, size_t n) override {
    const auto* b = static_cast<const uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  }
};

class FdSink : public Sink {
 public:
  FdSink(int fd, const Where& w) : fd_(fd), w_(w) {}
  void write(const void* p, size_t n) override {
    const auto* b = static_cast<const uint8_t*>(p);
    while (n > 0) {
      const ssize_t r = ::write(fd_, b, std::min<size_t>(n, size_t{1} << 30));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) w_.fail(std::string("write failed: ") + std::strerror(errno));
      b += r;
      n -= static_cast<size_t>(r);
    }
  }

 private:
  int fd_;
  const Where& w_;
};

void check_values(const VarValues& values, const char* who) {
  std::set<std::string_view> names;
  for (const auto& [name, a] : values) {
    if (name.empty()) throw ArgumentError(std::string(who) + ": a variable has an empty name");
    if (name.find('\0') != std::string::npos)
      throw ArgumentError(std::string(who) + ": variable name " + quoted(name) + " holds a NUL byte");
    if (name.size() + 4 > kMax16)
      throw ArgumentError(std::string(who) + ": variable name of " + std::to_string(name.size()) + " bytes is too long");
    if (!names.insert(name).second) throw ArgumentError(std::string(who) + ": variable " + quoted(name) + " is listed twice");
    if (a.dtype() != DType::f32 && a.dtype() != DType::i32)
      throw ArgumentError(std::string(who) + ": variable " + quoted(name) + " has an unsupported dtype");
  }
}

bool ascii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

void encode(Sink& out, const VarValues& values) {
  const uint64_t big = detail::npz_zip64_threshold;
  struct Entry {
    std::string name;
    uint32_t crc;
    uint64_t size, local;
  };
  std::vector<Entry> entries;
  for (const auto& [var, a] : values) {
    const std::string name = var + ".npy";
    const std::string header = npy_header(a.dtype(), a.shape());
    Entry e{name, crc_update(crc_update(0, nullptr, 0), header.data(), header.size()), header.size() + a.nbytes(),
            out.pos};
    e.crc = crc_update(e.crc, a.raw(), a.nbytes());
    const bool zip64 = e.size >= big;
    std::string h;
    put32(h, kLocalSig);
    put16(h, zip64 ? 45 : 20);
    put16(h, ascii(name) ? 0 : kFlagUtf8);
    put16(h, kStored);
    put16(h, 0);
    put16(h, kDosDate);
    put32(h, e.crc);
    put32(h, zip64 ? kMax32 : static_cast<uint32_t>(e.size));
    put32(h, zip64 ? kMax32 : static_cast<uint32_t>(e.size));
    put16(h, static_cast<uint16_t>(name.size()));
    put16(h, zip64 ? 20 : 0);
    h += name;
    if (zip64) {
      put16(h, 1);
      put16(h, 16);
      put64(h, e.size);
      put64(h, e.size);
    }
    out.put(h);
    out.put(header);
    out.put(a.raw(), a.nbytes());
    entries.push_back(std::move(e));
  }
  const uint64_t cd_off = out.pos;
  for (const Entry& e : entries) {
    const bool big_size = e.size >= big, big_off = e.local >= big;
    std::string x;
    if (big_size || big_off) {
      put16(x, 1);
      put16(x, static_cast<uint16_t>(8 * (2 * big_size + big_off)));
      if (big_size) put64(x, e.size), put64(x, e.size);
      if (big_off) put64(x, e.local);
    }
    std::string c;
    put32(c, kCentralSig);
    put16(c, (3 << 8) | 45);  // made by: Unix, ZIP 4.5
    put16(c, x.empty() ? 20 : 45);
    put16(c, ascii(e.name) ? 0 : kFlagUtf8);
    put16(c, kStored);
    put16(c, 0);
    put16(c, kDosDate);
    put32(c, e.crc);
    put32(c, big_size ? kMax32 : static_cast<uint32_t>(e.size));
    put32(c, big_size ? kMax32 : static_cast<uint32_t>(e.size));
    put16(c, static_cast<uint16_t>(e.name.size()));
    put16(c, static_cast<uint16_t>(x.size()));
    put16(c, 0);  // comment
    put16(c, 0);  // disk
    put16(c, 0);  // internal attributes
    put32(c, 0100644u << 16);  // a regular file, rw-r--r--
    put32(c, big_off ? kMax32 : static_cast<uint32_t>(e.local));
    out.put(c + e.name + x);
  }
  const uint64_t cd_size = out.pos - cd_off;
  const uint64_t n = entries.size();
  const bool zip64 = n >= kMax16 || cd_size >= big || cd_off >= big;
  std::string t;
  if (zip64) {
    const uint64_t e64 = out.pos;
    put32(t, kEnd64Sig);
    put64(t, kEnd64Bytes - 12);
    put16(t, (3 << 8) | 45);
    put16(t, 45);
    put32(t, 0);
    put32(t, 0);
    put64(t, n);
    put64(t, n);
    put64(t, cd_size);
    put64(t, cd_off);
    put32(t, kLocator64Sig);
    put32(t, 0);
    put64(t, e64);
    put32(t, 1);
  }
  put32(t, kEndSig);
  put16(t, 0);
  put16(t, 0);
  put16(t, n >= kMax16 ? kMax16 : static_cast<uint16_t>(n));
  put16(t, n >= kMax16 ? kMax16 : static_cast<uint16_t>(n));
  put32(t, cd_size >= big ? kMax32 : static_cast<uint32_t>(cd_size));
  put32(t, cd_off >= big ? kMax32 : static_cast<uint32_t>(cd_off));
  put16(t, 0);
  out.put(t);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

namespace detail {

void write_npz(const std::string& path, const VarValues& values, const char* who) {
  check_values(values, who);
  if (path.empty()) throw ArgumentError(std::string(who) + ": empty file name");
  // The new file is renamed over the target: over a FIFO, a socket or a
  // device that would silently delete it (as root, /dev/null itself), and
  // writing into one instead could wait for a reader forever. Refused.
  if (const std::string why = refuse_replacing(path); !why.empty())
    Where{who, path, ""}.fail(why + "; a checkpoint is written to a temporary file and renamed over it");
  static std::atomic<unsigned> counter{0};
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  Where w{who, path, ""};
  if (fd < 0) w.fail("cannot create the temporary file " + quoted(tmp) + ": " + std::strerror(errno));
  Fd file(fd);
  try {
    FdSink sink(fd, w);
    encode(sink, values);
    if (::fsync(fd) != 0) w.fail(std::string("fsync failed: ") + std::strerror(errno));
    if (::close(file.release()) != 0) w.fail(std::string("close failed: ") + std::strerror(errno));
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      w.fail("cannot rename " + quoted(tmp) + " over it: " + std::strerror(errno));
  } catch (const IoError& e) {
    ::unlink(tmp.c_str());
    throw IoError(std::string(e.what()) + " (the previous file, if any, is unchanged)");
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable. A folder that cannot be synced (some
  // file systems refuse) still holds the complete new file.
  const int dir = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

VarValues read_npz(const std::string& path, const char* who) {
  Where w{who, path, ""};
  // Never a plain open(): on a named pipe it would wait for a writer forever.
  std::string why;
  int err = 0;
  const int fd = open_regular_for_read(path, why, err);
  if (fd < 0) w.fail(why);
  Fd file(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) w.fail(std::string("cannot stat: ") + std::strerror(errno));
  FileSource src(fd, static_cast<uint64_t>(st.st_size), w);
  return decode(src, w);
}

}  // namespace detail

void write_npz(const std::string& path, const VarValues& values) { detail::write_npz(path, values, "write_npz"); }

VarValues read_npz(const std::string& path) { return detail::read_npz(path, "read_npz"); }

std::vector<uint8_t> encode_npz(const VarValues& values) {
  check_values(values, "encode_npz");
  VectorSink sink;
  encode(sink, values);
  return std::move(sink.bytes);
}

VarValues decode_npz(const uint8_t* data, size_t size, const std::string& label) {
  Where w{"decode_npz", label, ""};
  if (!data && size) throw ArgumentError("decode_npz: null data with size " + std::to_string(size));
  MemorySource src(data, size);
  return decode(src, w);
}

}  // namespace synk
