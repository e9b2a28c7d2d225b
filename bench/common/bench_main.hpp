// bench/common/bench_main.hpp — what every benchmark program does at its
// edges: its command line, the JSON file it was asked for, and main()
// turning an exception into one line on stderr and a non-zero exit status.
//
// Command-line errors (an unknown flag, a value out of range, a --json file
// that cannot be written, flags that contradict each other) are all found
// before any work starts and reported as one line naming the flag:
//
//   synk-mnist: error: --epochs: must be an integer in [1, 100000], got '0'
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <limits>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <synk/error.hpp>

namespace bench {

// A flag's value must be an integer in [lo, hi] (CLI11 validator; its
// message is "--flag: must be an integer in [lo, hi], got 'text'"). Unlike
// CLI11's PositiveNumber it refuses a negative value for an unsigned
// option instead of letting it wrap.
inline CLI::Validator integer(int64_t lo, uint64_t hi = std::numeric_limits<uint64_t>::max()) {
  std::string range = hi == std::numeric_limits<uint64_t>::max() ? ">= " + std::to_string(lo)
                                                                 : "in [" + std::to_string(lo) + ", " +
                                                                       std::to_string(hi) + "]";
  return CLI::Validator(
      [lo, hi, range](std::string& s) -> std::string {
        const char* b = s.data();
        const char* e = s.data() + s.size();
        bool ok = false;
        if (!s.empty() && s[0] == '-') {
          int64_t v = 0;
          auto [p, ec] = std::from_chars(b, e, v);
          ok = ec == std::errc() && p == e && v >= lo;  // hi >= 0 > v
        } else {
          uint64_t v = 0;
          auto [p, ec] = std::from_chars(b, e, v);
          ok = ec == std::errc() && p == e && v <= hi && (lo <= 0 || v >= static_cast<uint64_t>(lo));
        }
        return ok ? std::string() : "must be an integer " + range + ", got '" + s + "'";
      },
      "INT " + range);
}

// A flag's value must be a finite number between lo and hi; lo_open / hi_open
// exclude the bound itself (a learning rate > 0: number(0, INFINITY, true)).
inline CLI::Validator number(double lo, double hi, bool lo_open = false, bool hi_open = false) {
  auto fmt = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return std::string(buf);
  };
  const std::string range = std::isinf(hi) ? (lo_open ? "> " : ">= ") + fmt(lo)
                                           : std::string("in ") + (lo_open ? "(" : "[") + fmt(lo) + ", " + fmt(hi) +
                                                 (hi_open ? ")" : "]");
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double v = s.empty() ? NAN : std::strtod(s.c_str(), &end);
        const bool ok = !s.empty() && end == s.c_str() + s.size() && errno == 0 && std::isfinite(v) &&
                        (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
        return ok ? std::string() : "must be a finite number " + range + ", got '" + s + "'";
      },
      "NUMBER " + range);
}

// The --json file must be writable: an existing file this process may write,
// or a new file in an existing directory it may write in. Creates nothing
// (the file is written when the results are in).
inline CLI::Validator writable_file() {
  return CLI::Validator(
      [](std::string& path) -> std::string {
        if (path.empty()) return "needs a file name";
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0) {
          if (S_ISDIR(st.st_mode)) return "'" + path + "' is a directory";
          if (::access(path.c_str(), W_OK) != 0)
            return "cannot write '" + path + "': " + std::strerror(errno);
          return {};
        }
        if (errno != ENOENT) return "cannot write '" + path + "': " + std::strerror(errno);
        const size_t slash = path.find_last_of('/');
        const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
        if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
          return "cannot write '" + path + "': directory '" + dir + "' does not exist";
        if (::access(dir.c_str(), W_OK | X_OK) != 0)
          return "cannot write '" + path + "': directory '" + dir + "': " + std::strerror(errno);
        return {};
      },
      "FILE (writable)");
}

// Parses the command line. --help prints the usage and returns false (the
// program then ends with status 0); any parse or validation error becomes
// an ArgumentError carrying CLI11's message (which names the flag) on one
// line, for guarded_main to report.
inline bool parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return true;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {
      app.exit(e);  // --help: the usage, on stdout
      return false;
    }
    std::string what = e.what();
    for (char& c : what)
      if (c == '\n') c = ' ';
    throw synk::ArgumentError(what);
  }
}

// Writes j (indented, with a final newline) to path; IoError naming the
// file if it cannot be opened or if writing it fails, which may show only
// when the data is flushed (a full disk, /dev/full).
inline void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream out(path);
  if (!out) throw synk::IoError("cannot open --json file '" + path + "': " + std::strerror(errno));
  out << j.dump(2) << "\n";
  errno = 0;
  out.flush();
  const int flush_errno = errno;
  out.close();
  if (out.fail()) {
    const int err = flush_errno ? flush_errno : errno;
    throw synk::IoError("cannot write --json file '" + path + "'" + (err ? std::string(": ") + std::strerror(err) : ""));
  }
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
