// src/rank/accum.hpp — combining a sequence of (weight, value) parts of an
// output by its collect mode: a rank's slices and chunks (rank/share.cpp)
// and the master's combination of every rank's share (runtime/combine.cpp)
// add up by the same rules (private header).
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "synk/array.hpp"
#include "synk/error.hpp"
#include "synk/graph.hpp"

namespace synk::detail {

template <class T> inline void fold(T* acc, const T* v, int64_t n, Collect c) {
  switch (c) {
    case Collect::sum: for (int64_t i = 0; i < n; ++i) acc[i] = static_cast<T>(acc[i] + v[i]); break;
    case Collect::prod: for (int64_t i = 0; i < n; ++i) acc[i] = static_cast<T>(acc[i] * v[i]); break;
    case Collect::max: for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], v[i]); break;
    case Collect::min: for (int64_t i = 0; i < n; ++i) acc[i] = std::min(acc[i], v[i]); break;
    default: break;
  }
}

inline void fold(Array& acc, const ArrayView& v, Collect c) {
  if (acc.dtype() == DType::f32)
    fold(acc.data<float>(), static_cast<const float*>(v.data), acc.numel(), c);
  else
    fold(acc.data<int32_t>(), static_cast<const int32_t*>(v.data), acc.numel(), c);
}

inline void add_weighted(std::vector<double>& acc, const ArrayView& v, double w) {
  acc.resize(static_cast<size_t>(v.numel()), 0.0);
  if (v.dtype == DType::f32) {
    const float* p = static_cast<const float*>(v.data);
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += w * p[i];
  } else {
    const int32_t* p = static_cast<const int32_t*>(v.data);
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += w * p[i];
  }
}

inline Array from_doubles(const std::vector<double>& acc, double scale, DType t, const Shape& s) {
  Array a(t, s);
  if (t == DType::f32) {
    float* p = a.data<float>();
    for (size_t i = 0; i < acc.size(); ++i) p[i] = static_cast<float>(acc[i] * scale);
  } else {
    int32_t* p = a.data<int32_t>();
    for (size_t i = 0; i < acc.size(); ++i) p[i] = static_cast<int32_t>(std::lround(acc[i] * scale));
  }
  return a;
}

inline Array copy_of(const ArrayView& v) {
  Array a(v.dtype, v.shape);
  if (a.nbytes()) std::memcpy(a.raw(), v.data, a.nbytes());
  return a;
}

inline Array concat_rows(const std::vector<ArrayView>& parts, DType t, const Shape& like) {
  int64_t rows = 0;
  for (const auto& p : parts) rows += p.shape.empty() ? 1 : p.shape[0];
  Shape s = like;
  if (s.empty()) s = {rows};
  else s[0] = rows;
  Array a(t, s);
  auto* out = static_cast<uint8_t*>(a.raw());
  for (const auto& p : parts) {
    const size_t nb = static_cast<size_t>(p.numel()) * dtype_size(p.dtype);
    if (nb) std::memcpy(out, p.data, nb);
    out += nb;
  }
  return a;
}

// Combines a sequence of (weight, value) pairs by one collect mode.
class Accum {
 public:
  Accum(Collect c, size_t output) : c_(c), output_(output) {}
  void add(const ArrayView& v, double weight) {
    if (c_ == Collect::gather) {
      keep_.push_back(copy_of(v));
      return;
    }
    if (seen_ && v.shape != shape_)
      throw ShapeError("output " + std::to_string(output_) + ": shapes differ between parts (" + to_string(shape_) +
                       " vs " + to_string(v.shape) + "); only Collect::gather combines outputs with a batch dim");
    if (!seen_) {
      shape_ = v.shape;
      dtype_ = v.dtype;
    }
    if (c_ == Collect::avg) {
      add_weighted(sum_, v, weight);
      wsum_ += weight;
    } else if (c_ == Collect::none) {
      if (!seen_) first_ = copy_of(v);
    } else if (!seen_) {
      first_ = copy_of(v);
    } else {
      fold(first_, v, c_);
    }
    seen_ = true;
  }
  // Like add, for views that stay valid until result().
  void add_view(const ArrayView& v, double weight) {
    if (c_ == Collect::gather) {
      views_.push_back(v);
      dtype_ = v.dtype;
      shape_ = v.shape;
      seen_ = true;
      return;
    }
    add(v, weight);
  }
  bool empty() const { return !seen_ && keep_.empty(); }
  Array result(DType t, const Shape& empty_shape) {
    if (c_ == Collect::gather) {
      std::vector<ArrayView> parts = views_;
      for (const Array& a : keep_) parts.push_back(a.view());
      if (parts.empty()) return Array(t, empty_shape);
      return concat_rows(parts, parts[0].dtype, parts[0].shape);
    }
    if (!seen_) return Array(t, empty_shape);
    if (c_ == Collect::avg) return from_doubles(sum_, wsum_ > 0 ? 1.0 / wsum_ : 0.0, dtype_, shape_);
    return std::move(first_);
  }

 private:
  Collect c_;
  size_t output_;
  bool seen_ = false;
  DType dtype_ = DType::f32;
  Shape shape_;
  std::vector<double> sum_;
  double wsum_ = 0;
  Array first_;
  std::vector<Array> keep_;
  std::vector<ArrayView> views_;
};

}  // namespace synk::detail
