// synk/data.hpp — arrays in shared memory that every worker maps, and the
// row selections (`Batch`) that say which rows a call uses.
//
// A Data is made by a running Runtime (`rt.data(array)`); its elements live
// in an anonymous memfd segment that the master and every worker map, so a
// worker reads its own rows straight from it: the master copies nothing per
// call. Data is a cheap handle (copies share the same segment). The
// workers let go of a segment when its last handle goes, when a set() or
// resize() that needs more room replaces it, or when they exit; the memory
// itself is freed by the kernel once no process maps it, so a process's
// death cannot leak it (nothing is named).
// The runtime's close() does not touch a Data: the handle keeps the
// master's mapping and stays readable (array(), view()) until it goes;
// set() and resize() refuse once the runtime is closed.
//
//   synk::Data X = rt.data(images);            // [60000, 1, 28, 28] f32
//   synk::Data Y = rt.data(labels);            // [60000] i32
//   X.rows();                                  // 60000
//   X.set(new_images);                         // same or any other size
//   X.resize(1000);                            // keeps the first 1000 rows
//   synk::Array back = X.array();              // a host copy
//   step({X, Y}, {.batch = synk::Range{0, 500}});   // a ParallelFunction
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "synk/array.hpp"
#include "synk/dtype.hpp"

namespace synk {

// Rows [begin, end) of the whole input.
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
};

// Which rows of the scattered inputs a call uses: all of them (default), a
// Range, or a list of row indices (any order, repeats allowed). The index
// list is borrowed for the duration of the call only.
class Batch {
 public:
  enum class Kind : uint8_t { all, range, indices };
  Batch() = default;
  Batch(Range r) : kind_(Kind::range), range_(r) {}
  Batch(std::span<const int64_t> idx) : kind_(Kind::indices), idx_(idx) {}
  Batch(const std::vector<int64_t>& idx) : kind_(Kind::indices), idx_(idx) {}
  Kind kind() const { return kind_; }
  Range range() const { return range_; }
  std::span<const int64_t> indices() const { return idx_; }

 private:
  Kind kind_ = Kind::all;
  Range range_{};
  std::span<const int64_t> idx_{};
};

class Runtime;
struct DataRef;

class Data {
 public:
  Data() = default;  // empty: valid() is false

  bool valid() const { return impl_ != nullptr; }
  DType dtype() const;
  const Shape& shape() const;
  int64_t rows() const;  // shape[0]; 1 for a scalar
  size_t nbytes() const;
  // The shared elements, for reading in the master (valid until the next
  // set/resize of this Data).
  const void* raw() const;
  ArrayView view() const;
  Array array() const;  // a host copy

  // Replaces the contents (any shape; same dtype or not). Reuses the segment
  // when it is large enough, otherwise makes a new one.
  void set(const ArrayView& value);
  // New row count; the first min(old, new) rows keep their values, new rows
  // are zero.
  void resize(int64_t rows);
  // This Data as a job can carry it (synk/jobs.hpp: JobContext::rows): jobs
  // read and write its rows in place.
  DataRef ref() const;

  struct Impl;
  explicit Data(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  const std::shared_ptr<Impl>& impl() const { return impl_; }

 private:
  Impl& checked(const char* what) const;
  std::shared_ptr<Impl> impl_;
};

}  // namespace synk
