// tests/python/npz_tool.cpp — the C++ side of check_npz.py: writes the
// sample values (support/npz_sample.hpp) with synk, and checks files that
// numpy wrote. Exit code 0: as expected; 1: not (the reason on stderr).
//
//   synk_npz_tool write FILE [--zip64]    the sample, as save_checkpoint writes it
//   synk_npz_tool check FILE              FILE holds exactly the sample, bit for bit
//   synk_npz_tool refuse FILE TEXT        read_npz throws IoError containing TEXT
//   synk_npz_tool list FILE               name, dtype and shape of every array
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "data/npz_internal.hpp"
#include "support/npz_sample.hpp"
#include "synk/synk.hpp"

namespace {

int check(const std::string& path) {
  const synk::VarValues got = synk::read_npz(path), want = synk_test::npz_sample();
  if (got.size() != want.size()) {
    std::fprintf(stderr, "%s: %zu arrays, expected %zu\n", path.c_str(), got.size(), want.size());
    return 1;
  }
  int bad = 0;
  for (const auto& [name, w] : want) {
    const synk::Array* g = nullptr;
    for (const auto& [n, a] : got)
      if (n == name) g = &a;
    if (!g) {
      std::fprintf(stderr, "%s: no array '%s'\n", path.c_str(), name.c_str());
      ++bad;
    } else if (g->dtype() != w.dtype() || g->shape() != w.shape() ||
               std::memcmp(g->raw(), w.raw(), w.nbytes()) != 0) {
      std::fprintf(stderr, "%s: '%s' is %s %s, differs from the expected %s %s or its values\n", path.c_str(),
                   name.c_str(), synk::dtype_name(g->dtype()), synk::to_string(g->shape()).c_str(),
                   synk::dtype_name(w.dtype()), synk::to_string(w.shape()).c_str());
      ++bad;
    }
  }
  if (!bad) std::printf("%s: all %zu arrays as expected\n", path.c_str(), want.size());
  return bad ? 1 : 0;
}

int run(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "", path = argc > 2 ? argv[2] : "";
  if (cmd == "write" && (argc == 3 || (argc == 4 && std::strcmp(argv[3], "--zip64") == 0))) {
    if (argc == 4) synk::detail::npz_zip64_threshold = 0;
    synk::write_npz(path, synk_test::npz_sample());
    return 0;
  }
  if (cmd == "check" && argc == 3) return check(path);
  if (cmd == "list" && argc == 3) {
    for (const auto& [n, a] : synk::read_npz(path))
      std::printf("%s %s %s\n", n.c_str(), synk::dtype_name(a.dtype()), synk::to_string(a.shape()).c_str());
    return 0;
  }
  if (cmd == "refuse" && argc == 4) {
    try {
      synk::read_npz(path);
    } catch (const synk::IoError& e) {
      if (std::string(e.what()).find(argv[3]) != std::string::npos) {
        std::printf("refused as expected: %s\n", e.what());
        return 0;
      }
      std::fprintf(stderr, "refused, but the message lacks '%s': %s\n", argv[3], e.what());
      return 1;
    }
    std::fprintf(stderr, "%s: read without error, expected a refusal containing '%s'\n", path.c_str(), argv[3]);
    return 1;
  }
  std::fprintf(stderr, "usage: synk_npz_tool write FILE [--zip64] | check FILE | refuse FILE TEXT | list FILE\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "synk_npz_tool: %s\n", e.what());
    return 1;
  }
}
