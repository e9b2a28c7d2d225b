// synk/error.hpp — the exceptions synk throws.
//
// Every failure in the library surfaces as a synk::Error (never exit/abort).
// Subclasses say what kind of failure it was; the message names where it
// happened (rank, device, function, op, file) and what failed.
//
//   try { fn(inputs); }
//   catch (const synk::ShapeError& e) { std::cerr << e.what() << "\n"; }
#pragma once

#include <stdexcept>
#include <string>

namespace synk {

// Base of everything synk throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A graph was built with incompatible shapes (message names op and shapes).
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A graph was built with the wrong element type.
class TypeError : public Error {
 public:
  using Error::Error;
};

// A caller passed a bad argument (unknown name, bad index, wrong count).
class ArgumentError : public Error {
 public:
  using Error::Error;
};

// A serialised graph/function buffer was truncated, corrupted or of an
// unsupported version.
class FormatError : public Error {
 public:
  using Error::Error;
};

// A file could not be read or is malformed (message names the file).
class IoError : public Error {
 public:
  using Error::Error;
};

// A backend call failed (BLAS, CUDA, NCCL, system call).
class BackendError : public Error {
 public:
  using Error::Error;
};

}  // namespace synk
