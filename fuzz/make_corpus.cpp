// fuzz/make_corpus.cpp — writes the seed corpus of the fuzz targets:
// small valid serialised graphs (built with the public API, so they follow
// the format exactly) and small IDX files, valid and invalid, plain and
// gzipped. The files are committed under fuzz/corpus/; rerun this after a
// format change:  build-fuzz/bin/synk_make_corpus fuzz/corpus
#include <synk/synk.hpp>
#include "data/npz_internal.hpp"
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {

void write(const fs::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

void write_gz(const fs::path& p, const Bytes& b) {
  gzFile f = gzopen(p.c_str(), "wb9");
  if (!f || gzwrite(f, b.data(), static_cast<unsigned>(b.size())) != static_cast<int>(b.size()) ||
      gzclose(f) != Z_OK)
    throw std::runtime_error("cannot write " + p.string());
}

Bytes gzip_bytes(const Bytes& b, const fs::path& scratch) {
  write_gz(scratch, b);
  std::ifstream f(scratch, std::ios::binary);
  Bytes out((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  fs::remove(scratch);
  return out;
}

Bytes idx(uint8_t type, const std::vector<uint32_t>& dims, size_t elements) {
  Bytes b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  for (size_t i = 0; i < elements; ++i) b.push_back(static_cast<uint8_t>(i * 37 + 11));
  return b;
}

// --- graphs -------------------------------------------------------------------

Bytes linear_regression() {
  synk::Graph g;
  auto x = g.input("x", synk::f32, {synk::batch, 1});
  auto y = g.input("y", synk::f32, {synk::batch, 1});
  auto w = g.variable("w", {1, 1});
  auto b = g.variable("b", {1});
  auto loss = synk::mean(synk::square(synk::matmul(x, w) + b - y));
  auto ups = synk::optim::sgd({w, b}, synk::grad(loss, {w, b}), {.lr = 0.5f});
  return synk::serialize(g, {synk::make_function_def({"train", {x, y}, {{loss}}, ups})});
}

Bytes mlp() {
  synk::Graph g;
  auto x = g.input("x", synk::f32, {synk::batch, 8});
  auto t = g.input("t", synk::i32, {synk::batch});
  auto l1 = synk::nn::dense(g, "l1", 8, 6);
  auto l2 = synk::nn::dense(g, "l2", 6, 3, synk::Init::glorot_normal(), synk::Init::constant(0.1f));
  auto h = synk::dropout(synk::relu(l1(x)), 0.25f);
  auto logits = l2(synk::tanh(h));
  auto loss = synk::mean(synk::softmax_cross_entropy(logits, t));
  std::vector<synk::Tensor> ps = {l1.W, l1.b, l2.W, l2.b};
  auto ups = synk::optim::adam(ps, synk::grad(loss, ps));
  auto acc = synk::mean(synk::cast(synk::equal(synk::argmax(logits), t), synk::f32));
  auto train = synk::make_function_def({"train", {x, t}, {{loss}, {acc, synk::Collect::sum}}, ups});
  auto eval = synk::make_function_def(
      {"eval", {x}, {{synk::softmax(logits), synk::Collect::gather}, {synk::max(logits, {1}), synk::Collect::max}}, {}});
  return synk::serialize(g, {train, eval});
}

Bytes cnn() {
  synk::Graph g;
  auto x = g.input("img", synk::f32, {synk::batch, 1, 6, 6});
  auto t = g.input("label", synk::i32, {synk::batch});
  auto c1 = synk::nn::conv2d(g, "c1", 1, 2, 3, {.stride = 1, .padding = 1});
  auto p = synk::max_pool2d(synk::relu(c1(x)), 2);
  auto l = synk::nn::dense(g, "out", 2 * 3 * 3, 4);
  auto logits = l(synk::flatten(p));
  auto loss = synk::mean(synk::softmax_cross_entropy(logits, t));
  std::vector<synk::Tensor> ps = {c1.W, c1.b, l.W, l.b};
  auto ups = synk::optim::nesterov(ps, synk::grad(loss, ps), {.lr = 0.01f, .momentum = 0.9f});
  auto probe = synk::sum(synk::sqrt(synk::exp(synk::log_softmax(logits)) + 1.f), {0}, true);
  return synk::serialize(g, {synk::make_function_def({"train", {x, t}, {{loss}, {probe, synk::Collect::min}}, ups}),
                             synk::make_function_def({"noop", {}, {}, {}})});
}

Bytes shapes_and_reductions() {
  synk::Graph g;
  auto a = g.input("a", synk::f32, {2, 3, 4});
  auto v = g.variable("v", {4, 3}, synk::Init::uniform(-1.f, 1.f));
  auto r = synk::reshape(synk::transpose(a, {0, 2, 1}), {8, 3});
  auto m = synk::matmul(r, v, false, true);  // [8, 3] x [4, 3]^T
  auto s = synk::pow(synk::sigmoid(m), 2.f) / 3.f - synk::broadcast_to(g.constant(1.f), {8, 4});
  return synk::serialize(g, {synk::make_function_def({"f", {a}, {{s, synk::Collect::prod}, {synk::mean(s), synk::Collect::none}}, {}})});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR   (writes CORPUS_DIR/{deserialize,idx,checkpoint}/)\n", argv[0]);
    return 2;
  }
  try {
    const fs::path ds = fs::path(argv[1]) / "deserialize", id = fs::path(argv[1]) / "idx";
    fs::create_directories(ds);
    fs::create_directories(id);

    write(ds / "linear_regression.bin", linear_regression());
    write(ds / "mlp_adam_two_functions.bin", mlp());
    write(ds / "cnn_nesterov.bin", cnn());
    write(ds / "shapes_reductions.bin", shapes_and_reductions());
    {
      synk::Graph empty;
      write(ds / "empty.bin", synk::serialize(empty, {}));
    }

    const Bytes images = idx(0x08, {2, 3, 3}, 18), labels = idx(0x08, {2}, 2);
    write(id / "images_2x3x3.idx", images);
    write(id / "labels_2.idx", labels);
    write(id / "zero_rows.idx", idx(0x08, {0, 28, 28}, 0));
    write(id / "four_dims.idx", idx(0x08, {1, 2, 2, 2}, 8));
    write_gz(id / "images_2x3x3.idx.gz", images);
    write_gz(id / "labels_2.idx.gz", labels);
    // Invalid ones, each failing a different check.
    write(id / "bad_magic.idx", Bytes{0x01, 0x00, 0x08, 0x01, 0, 0, 0, 1, 7});
    write(id / "float_type.idx", idx(0x0d, {1}, 4));
    write(id / "truncated_data.idx", idx(0x08, {4, 4}, 9));
    write(id / "trailing_data.idx", idx(0x08, {2}, 3));
    write(id / "truncated_header.idx", Bytes{0, 0, 8, 2, 0, 0});
    write(id / "empty.idx", Bytes{});
    const Bytes gz = gzip_bytes(images, id / "scratch.gz");
    write(id / "truncated.idx.gz", Bytes(gz.begin(), gz.begin() + static_cast<long>(gz.size() / 2)));
    Bytes corrupt = gz;
    corrupt[corrupt.size() - 6] ^= 0xff;  // inside the CRC32 trailer
    write(id / "bad_crc.idx.gz", corrupt);

    // Checkpoints (.npz). numpy_savez*.npz in the same folder were written
    // by numpy (tests/python/check_npz.py) and are kept as they are.
    const fs::path ck = fs::path(argv[1]) / "checkpoint";
    fs::create_directories(ck);
    synk::Array w(synk::f32, {2, 3}), n(synk::i32, {3});
    for (int i = 0; i < 6; ++i) w.data<float>()[i] = 0.5f * static_cast<float>(i) - 1.f;
    for (int i = 0; i < 3; ++i) n.data<int32_t>()[i] = i - 1;
    const synk::VarValues values = {{"l1/W", w}, {"steps", n}, {"t", synk::Array::scalar_f32(3.f)},
                                    {"empty", synk::Array(synk::f32, {0, 2})}};
    write(ck / "synk.npz", synk::encode_npz(values));
    write(ck / "empty_archive.npz", synk::encode_npz({}));
    {
      // ZIP64 fields everywhere, as for members of 4 GiB and more.
      const uint64_t saved = synk::detail::npz_zip64_threshold;
      synk::detail::npz_zip64_threshold = 0;
      write(ck / "synk_zip64.npz", synk::encode_npz(values));
      synk::detail::npz_zip64_threshold = saved;
    }
    const Bytes ok = synk::encode_npz({{"W", w}});
    write(ck / "truncated.npz", Bytes(ok.begin(), ok.begin() + static_cast<long>(ok.size() / 2)));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "synk_make_corpus: %s\n", e.what());
    return 1;
  }
  return 0;
}
