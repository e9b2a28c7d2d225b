// Shapes and dtypes: names, printing, and the batch-dim helpers every part
// of the library uses to resolve symbolic shapes.
#include "synk/dtype.hpp"

#include "synk/error.hpp"

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

namespace {
// Products are checked: a corrupt or hostile shape (e.g. from a serialised
// graph) must not wrap around to a small element count and under-allocate.
int64_t checked_mul(int64_t n, Dim d, const Shape& s) {
  int64_t r;
  if (d < 0 || __builtin_mul_overflow(n, d, &r))
    throw ShapeError("shape " + to_string(s) + " has too many elements (or a negative dim)");
  return r;
}
}  // namespace

int64_t static_numel(const Shape& s) {
  int64_t n = 1;
  for (Dim d : s)
    if (d != batch) n = checked_mul(n, d, s);
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
  for (Dim d : s) n = checked_mul(n, d, s);
  return n;
}

}  // namespace synk
