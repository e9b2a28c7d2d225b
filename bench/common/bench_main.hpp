// bench/common/bench_main.hpp — what every benchmark program does at its
// edges: the JSON file it was asked for, and main() turning an exception
// into one line on stderr and a non-zero exit status.
#pragma once

#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <synk/error.hpp>

namespace bench {

// Writes j (indented, with a final newline) to path; IoError naming the
// file if it cannot be opened or written.
inline void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  if (out) out << j.dump(2) << "\n";
  if (!out) throw synk::IoError("cannot write --json file '" + path + "'");
}

// run(argc, argv), with an escaping exception reported as
// "<prog>: error: <what>" and turned into exit status `status`.
inline int guarded_main(const char* prog, int (*run)(int, char**), int argc, char** argv, int status = 1) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", prog, e.what());
    return status;
  }
}

}  // namespace bench
