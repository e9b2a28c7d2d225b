// synk/idx.hpp — MNIST-format (IDX) data files, gzipped or not.
//
// IDX: big-endian magic (0x00 0x00 type ndim), ndim big-endian u32 dims,
// then the elements. synk reads unsigned-byte files (type 0x08), the type
// of every MNIST-format set. Files ending in .gz (or starting with the gzip
// magic) are inflated with zlib.
//
//   auto ds = synk::load_mnist("/usr/share/datasets/fashion-mnist");
//   assert((ds.train_images.shape() == synk::Shape{60000, 1, 28, 28}));  // f32 in [0,1)
//   assert((ds.train_labels.shape() == synk::Shape{60000}));             // i32
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "synk/array.hpp"

namespace synk {

// The raw contents of one IDX file.
struct IdxFile {
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;  // the elements, row-major
};

// Reads one IDX file (u8 elements). Throws IoError naming the file and what
// is wrong: missing, unreadable, not a regular file (a named pipe, socket,
// device or directory: refused at once, never waited on), bad magic,
// unsupported type, truncated, trailing data, or dims whose product is
// implausibly large for the file.
IdxFile read_idx(const std::string& path);

inline constexpr const char* kDefaultMnistDir = "/usr/share/datasets/fashion-mnist";

struct MnistSet {
  Array train_images, train_labels, test_images, test_labels;
};

// Loads {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] from `dir`. Images
// become f32 [N, 1, 28, 28] scaled by 1/256 into [0, 1); labels i32 [N].
// Throws IoError if a file is missing (naming the paths tried) or if image
// and label counts disagree.
MnistSet load_mnist(const std::string& dir = kDefaultMnistDir);

}  // namespace synk
