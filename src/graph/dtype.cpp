// Shapes and dtypes: names, printing, and the batch-dim helpers every part
// of the library uses to resolve symbolic shapes.
#include "synk/dtype.hpp"

namespace synk {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::i32: return "i32";
  }
  return "?";
}

std::string to_string(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += s[i] == batch ? std::string("batch") : std::to_string(s[i]);
  }
  return r + "]";
}

bool has_batch(const Shape& s) {
  for (Dim d : s)
    if (d == batch) return true;
  return false;
}

int64_t static_numel(const Shape& s) {
  int64_t n = 1;
  for (Dim d : s)
    if (d != batch) n *= d;
  return n;
}

Shape resolve(const Shape& s, int64_t b) {
  Shape r = s;
  for (Dim& d : r)
    if (d == batch) d = b;
  return r;
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (Dim d : s) n *= d;
  return n;
}

}  // namespace synk
