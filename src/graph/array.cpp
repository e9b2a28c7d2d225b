// Host arrays: 64-byte aligned, zero-filled storage so kernels can use
// aligned vector loads and so a fresh Array never exposes stale memory.
#include "synk/array.hpp"

#include <cstdlib>
#include <cstring>

namespace synk {

void Array::Free::operator()(void* p) const { std::free(p); }

Array::Array(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (Dim d : shape_)
    if (d < 0) throw ShapeError("Array: shape " + to_string(shape_) + " must be concrete and non-negative");
  numel_ = synk::numel(shape_);
  size_t bytes = (nbytes() + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw Error("Array: out of memory allocating " + std::to_string(bytes) + " bytes");
  std::memset(p, 0, bytes);
  data_.reset(p);
}

Array::Array(const Array& o) : Array(o.dtype_, o.shape_) {
  if (nbytes()) std::memcpy(raw(), o.raw(), nbytes());
}

Array& Array::operator=(const Array& o) {
  if (this != &o) *this = Array(o);
  return *this;
}

Array Array::from(const std::vector<float>& v, Shape shape) {
  Array a(DType::f32, std::move(shape));
  if (static_cast<int64_t>(v.size()) != a.numel())
    throw ShapeError("Array::from: " + std::to_string(v.size()) + " values for shape " + to_string(a.shape()));
  if (a.nbytes()) std::memcpy(a.raw(), v.data(), a.nbytes());
  return a;
}

Array Array::from(const std::vector<int32_t>& v, Shape shape) {
  Array a(DType::i32, std::move(shape));
  if (static_cast<int64_t>(v.size()) != a.numel())
    throw ShapeError("Array::from: " + std::to_string(v.size()) + " values for shape " + to_string(a.shape()));
  if (a.nbytes()) std::memcpy(a.raw(), v.data(), a.nbytes());
  return a;
}

float Array::scalar() const {
  if (numel_ != 1)
    throw ShapeError("Array::scalar() on an array of shape " + to_string(shape_));
  return dtype_ == DType::f32 ? *static_cast<const float*>(raw())
                              : static_cast<float>(*static_cast<const int32_t*>(raw()));
}

}  // namespace synk
