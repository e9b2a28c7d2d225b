// fuzz/fuzz_idx.cpp — libFuzzer target for the IDX reader (synk::read_idx)
// and the MNIST loader built on it (synk::load_mnist), which parse data
// files a user points synk at, plain or gzipped.
//
// read_idx takes a path, so each input is written to a memfd and read back
// through /proc/self/fd/N: no disk traffic, no temp files per input. When an
// input parses as a 3-dim image file, load_mnist also runs on a temp folder
// whose four data-set files are symlinks to that memfd (images) and to a
// second memfd holding matching labels, covering the conversion to Arrays.
//
// Contract checked: failures are synk::IoError only; a parsed file has 1..16
// dims whose product is exactly the element count; load_mnist returns f32
// images [N, 1, R, C] in [0, 1) and labels [N].
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "synk/error.hpp"
#include "synk/idx.hpp"

namespace {

[[noreturn]] void violated(const char* what, const char* detail) {
  std::fprintf(stderr, "fuzz_idx: contract violated: %s%s%s\n", what, detail ? ": " : "",
               detail ? detail : "");
  std::abort();
}

// One in-memory file, reachable by path.
struct MemFile {
  int fd = -1;
  std::string path;
  explicit MemFile(const char* name) {
    fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) {
      std::perror("fuzz_idx: memfd_create");
      std::abort();
    }
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  void write_all(const uint8_t* p, size_t n) const {
    if (ftruncate(fd, 0) != 0) std::abort();
    size_t done = 0;
    while (done < n) {
      const ssize_t w = pwrite(fd, p + done, n - done, static_cast<off_t>(done));
      if (w <= 0) std::abort();
      done += static_cast<size_t>(w);
    }
  }
};

// The folder load_mnist reads: four symlinks into this process's memfds.
// Removed at exit; a crash can leave it behind in $TMPDIR (tiny).
struct MnistDir {
  MemFile images{"synk-fuzz-images"}, labels{"synk-fuzz-labels"};
  std::filesystem::path dir;
  MnistDir() {
    namespace fs = std::filesystem;
    std::string tmpl = (fs::temp_directory_path() / "synk-fuzz-idx-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) {
      std::perror("fuzz_idx: mkdtemp");
      std::abort();
    }
    dir = tmpl;
    for (const char* set : {"train", "t10k"}) {
      fs::create_symlink(images.path, dir / (std::string(set) + "-images-idx3-ubyte"));
      fs::create_symlink(labels.path, dir / (std::string(set) + "-labels-idx1-ubyte"));
    }
  }
  ~MnistDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

MemFile& input_file() {
  static MemFile f("synk-fuzz-idx");
  return f;
}
MnistDir& mnist_dir() {
  static MnistDir d;
  return d;
}

void check_mnist(const uint8_t* data, size_t size, int64_t n) {
  MnistDir& d = mnist_dir();
  d.images.write_all(data, size);
  std::vector<uint8_t> labels = {0, 0, 8, 1};
  for (int s = 24; s >= 0; s -= 8) labels.push_back(static_cast<uint8_t>(n >> s));
  for (int64_t i = 0; i < n; ++i) labels.push_back(static_cast<uint8_t>(i % 10));
  d.labels.write_all(labels.data(), labels.size());
  try {
    const synk::MnistSet s = synk::load_mnist(d.dir.string());
    for (const synk::Array* a : {&s.train_images, &s.test_images}) {
      if (a->shape().size() != 4 || a->shape()[0] != n || a->shape()[1] != 1)
        violated("load_mnist: image shape is not [N, 1, R, C]", nullptr);
      const float* p = a->data<float>();
      for (int64_t i = 0; i < a->numel(); ++i)
        if (!(p[i] >= 0.f && p[i] < 1.f)) violated("load_mnist: pixel outside [0, 1)", nullptr);
    }
    if (s.train_labels.shape() != synk::Shape{n}) violated("load_mnist: labels not [N]", nullptr);
  } catch (const synk::IoError& e) {
    violated("load_mnist refused a file read_idx accepted", e.what());
  } catch (const std::exception& e) {
    violated("load_mnist threw something other than IoError", e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  MemFile& f = input_file();
  f.write_all(data, size);
  synk::IdxFile idx;
  try {
    idx = synk::read_idx(f.path);
  } catch (const synk::IoError&) {
    return 0;
  } catch (const std::exception& e) {
    violated("read_idx threw something other than IoError", e.what());
  }
  if (idx.dims.empty() || idx.dims.size() > 16) violated("read_idx: dims count outside 1..16", nullptr);
  uint64_t count = 1;
  for (int64_t d : idx.dims) {
    if (d < 0) violated("read_idx: negative dim", nullptr);
    count *= static_cast<uint64_t>(d);
  }
  if (count != idx.bytes.size()) violated("read_idx: element count differs from the dims' product", nullptr);
  // Labels for N rows cost N bytes; an image file of 0-pixel rows could
  // claim 2^32 of them, so only modest N is tried.
  if (idx.dims.size() == 3 && idx.dims[0] <= (int64_t{1} << 16)) check_mnist(data, size, idx.dims[0]);
  return 0;
}
