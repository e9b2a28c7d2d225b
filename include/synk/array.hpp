// synk/array.hpp — host arrays: the concrete values that go into and come
// out of functions.
//
// Array owns its elements (64-byte aligned); ArrayView borrows them. Both are
// row-major with a concrete shape and a dtype.
//
//   auto a = synk::Array::zeros(synk::f32, {2, 3});
//   a.data<float>()[4] = 1.f;
//   float s = fn({a}).at(0).scalar();
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "synk/dtype.hpp"
#include "synk/error.hpp"

namespace synk {

// A borrowed, read-only view of row-major host data.
struct ArrayView {
  DType dtype = DType::f32;
  Shape shape;
  const void* data = nullptr;

  int64_t numel() const { return synk::numel(shape); }
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
};

class Array {
 public:
  Array() = default;
  Array(DType dtype, Shape shape);  // zero-filled
  static Array zeros(DType dtype, Shape shape) { return Array(dtype, std::move(shape)); }
  static Array from(const std::vector<float>& v, Shape shape);
  static Array from(const std::vector<int32_t>& v, Shape shape);
  static Array scalar_f32(float v) { return from(std::vector<float>{v}, {}); }

  Array(const Array& o);
  Array& operator=(const Array& o);
  Array(Array&&) noexcept = default;
  Array& operator=(Array&&) noexcept = default;

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return numel_; }
  int64_t rows() const { return shape_.empty() ? 1 : shape_[0]; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  void* raw() { return data_.get(); }
  const void* raw() const { return data_.get(); }

  // Typed access; throws TypeError if T does not match dtype().
  template <class T> T* data() { check<T>(); return static_cast<T*>(raw()); }
  template <class T> const T* data() const { check<T>(); return static_cast<const T*>(raw()); }
  template <class T> std::vector<T> to_vector() const {
    const T* p = data<T>();
    return std::vector<T>(p, p + numel_);
  }
  // The single element of a one-element array, as float.
  float scalar() const;
  ArrayView view() const { return {dtype_, shape_, raw()}; }
  operator ArrayView() const { return view(); }

 private:
  template <class T> void check() const;
  struct Free { void operator()(void* p) const; };
  DType dtype_ = DType::f32;
  Shape shape_;
  int64_t numel_ = 0;
  std::unique_ptr<void, Free> data_;
};

template <> inline void Array::check<float>() const {
  if (dtype_ != DType::f32) throw TypeError("Array::data<float>() on an array of dtype " + std::string(dtype_name(dtype_)));
}
template <> inline void Array::check<int32_t>() const {
  if (dtype_ != DType::i32) throw TypeError("Array::data<int32_t>() on an array of dtype " + std::string(dtype_name(dtype_)));
}

}  // namespace synk
