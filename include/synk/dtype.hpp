// synk/dtype.hpp — element types and shapes.
//
// A Shape is a list of dims. One dim may be the symbolic batch size
// `synk::batch`, resolved when a function is called with real data:
//
//   synk::Shape s{synk::batch, 784};    // [B, 784]
//   assert(synk::to_string(s) == "[batch, 784]");
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace synk {

enum class DType : uint8_t { f32 = 0, i32 = 1 };
inline constexpr DType f32 = DType::f32;
inline constexpr DType i32 = DType::i32;

inline constexpr size_t dtype_size(DType) { return 4; }
const char* dtype_name(DType t);

using Dim = int64_t;
using Shape = std::vector<Dim>;

// The symbolic batch dimension. Only dims may carry it; it is substituted by
// the actual row count when a function is compiled for concrete inputs.
inline constexpr Dim batch = -1;

std::string to_string(const Shape& s);
bool has_batch(const Shape& s);
// Product of the concrete dims (batch counts as 1).
int64_t static_numel(const Shape& s);
// Replaces `batch` by b.
Shape resolve(const Shape& s, int64_t b);
// Number of elements of a concrete shape.
int64_t numel(const Shape& s);

}  // namespace synk
