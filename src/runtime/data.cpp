// src/runtime/data.cpp — synk::Data: arrays in memfd segments that the master
// and every worker map. A segment is published to the workers (fd over their
// socket) when made and released when replaced or when the last handle goes;
// the memory itself is freed by the kernel once no process maps it.
#include <algorithm>
#include <cstring>

#include "runtime/core.hpp"

namespace synk {

using detail::RuntimeCore;

Data::Impl::~Impl() {
  auto rt = this->rt.lock();
  if (!rt || !id) return;
  // The last handle may go in another thread while a call runs: wait for
  // it (release() changes what the call reads). In the thread of the call
  // (a job the master runs) nothing else runs meanwhile.
  const bool claimed = rt->claim();
  rt->release(id, -1);
  if (claimed) rt->unclaim();
}

namespace {

void fill(Data::Impl& d, RuntimeCore& c, DType t, Shape shape, const void* src, size_t keep_bytes) {
  if (t != DType::f32 && t != DType::i32)
    throw TypeError("Data: dtype " + std::to_string(static_cast<int>(t)) + " is not a synk::DType (f32, i32)");
  uint64_t elems = 1;
  for (Dim x : shape) {
    if (x < 0) throw ShapeError("Data: shape " + to_string(shape) + " has a negative or batch dim");
    if (x > 0 && elems > (uint64_t{1} << 60) / static_cast<uint64_t>(x))
      throw ShapeError("Data: shape " + to_string(shape) + " is too large");
    elems *= static_cast<uint64_t>(x);
  }
  const size_t nb = static_cast<size_t>(numel(shape)) * dtype_size(t);
  if (d.seg && d.seg.size() >= nb && nb > 0) {
    if (src && src != d.seg.data()) std::memmove(d.seg.data(), src, nb);
    else if (!src && nb > keep_bytes) std::memset(static_cast<uint8_t*>(d.seg.data()) + keep_bytes, 0, nb - keep_bytes);
  } else {
    // Sized with room for growth only on resize (set() sizes exactly).
    comm::SharedSegment seg = comm::SharedSegment::create(std::max<size_t>(nb, 64), "synk-data");
    if (src) std::memcpy(seg.data(), src, nb);
    else if (keep_bytes && d.seg) std::memcpy(seg.data(), d.seg.data(), std::min(keep_bytes, nb));
    const uint64_t id = c.publish(seg, -1);
    if (d.id) c.release(d.id, -1);
    d.seg = std::move(seg);
    d.id = id;
  }
  d.dtype = t;
  d.shape = std::move(shape);
}

}  // namespace

namespace detail {

namespace {
std::string data_name(const Data::Impl& d) {
  return std::string("a Data of ") + dtype_name(d.dtype) + " " + to_string(d.shape) + " (segment " +
         std::to_string(d.id) + ")";
}
}  // namespace

void check_data_open(const Data::Impl& d, const std::string& what) {
  const auto owner = d.rt.lock();
  if (!owner || !owner->open || d.gen != owner->gen)
    throw ArgumentError(what + ": " + data_name(d) + " belongs to a runtime that was closed; make it again with " +
                        "the open runtime's data()");
}

void refuse_data(const RuntimeCore& c, const Data::Impl& d, const std::string& what) {
  check_data_open(d, what);
  if (d.rt.lock().get() != &c) throw ArgumentError(what + ": " + data_name(d) + " belongs to another runtime");
  throw ArgumentError(what + ": " + data_name(d) + " has no segment");
}

}  // namespace detail

Data Runtime::data(const ArrayView& value) {
  RuntimeCore& c = checked("data");
  detail::Busy busy(c, "data");
  if (!value.data && value.numel() > 0) throw ArgumentError("Runtime::data: the array has no data");
  auto d = std::make_shared<Data::Impl>();
  d->rt = impl_;
  d->core = &c;
  d->gen = c.gen;
  fill(*d, c, value.dtype, value.shape, value.data, 0);
  return Data(std::move(d));
}

Data Runtime::data(DType dtype, Shape shape) {
  RuntimeCore& c = checked("data");
  detail::Busy busy(c, "data");
  auto d = std::make_shared<Data::Impl>();
  d->rt = impl_;
  d->core = &c;
  d->gen = c.gen;
  fill(*d, c, dtype, std::move(shape), nullptr, 0);
  return Data(std::move(d));
}

Data::Impl& Data::checked(const char* what) const {
  if (!impl_) throw ArgumentError(std::string("Data::") + what + ": empty Data");
  return *impl_;
}

DType Data::dtype() const { return checked("dtype").dtype; }
const Shape& Data::shape() const { return checked("shape").shape; }
int64_t Data::rows() const {
  const Shape& s = checked("rows").shape;
  return s.empty() ? 1 : s[0];
}
size_t Data::nbytes() const {
  const Impl& d = checked("nbytes");
  return static_cast<size_t>(numel(d.shape)) * dtype_size(d.dtype);
}
const void* Data::raw() const { return checked("raw").seg.data(); }
ArrayView Data::view() const {
  const Impl& d = checked("view");
  return {d.dtype, d.shape, d.seg.data()};
}
Array Data::array() const {
  const Impl& d = checked("array");
  Array a(d.dtype, d.shape);
  if (a.nbytes()) std::memcpy(a.raw(), d.seg.data(), a.nbytes());
  return a;
}

void Data::set(const ArrayView& value) {
  Impl& d = checked("set");
  auto rt = d.rt.lock();
  if (!rt || !rt->open) throw ArgumentError("Data::set: the runtime is closed");
  rt->check_usable("Data::set");
  detail::Busy busy(*rt, "Data::set");
  if (!value.data && value.numel() > 0) throw ArgumentError("Data::set: the array has no data");
  fill(d, *rt, value.dtype, value.shape, value.data, 0);
}

void Data::resize(int64_t rows) {
  Impl& d = checked("resize");
  auto rt = d.rt.lock();
  if (!rt || !rt->open) throw ArgumentError("Data::resize: the runtime is closed");
  rt->check_usable("Data::resize");
  detail::Busy busy(*rt, "Data::resize");
  if (rows < 0) throw ArgumentError("Data::resize: negative row count " + std::to_string(rows));
  if (d.shape.empty()) throw ShapeError("Data::resize: a scalar Data has no rows");
  Shape s = d.shape;
  const size_t row_bytes = static_cast<size_t>(numel(Shape(s.begin() + 1, s.end()))) * dtype_size(d.dtype);
  const size_t keep = row_bytes * static_cast<size_t>(std::min<int64_t>(rows, s[0]));
  s[0] = rows;
  fill(d, *rt, d.dtype, s, nullptr, keep);
}

}  // namespace synk
