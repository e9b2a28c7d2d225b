// tests/support/npz_sample.hpp — the values the checkpoint tests write and
// expect: names with a folder part and a non-ASCII one, both dtypes, the odd
// shapes (scalar, empty, 1-d) and floats whose bits matter (NaN payloads,
// -0, infinity, a denormal). tests/python/check_npz.py builds the same
// values with numpy; change both together.
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

#include "synk/synk.hpp"

namespace synk_test {

// i * scale + offset for element i.
inline synk::Array ramp(synk::Shape shape, float scale, float offset) {
  synk::Array a(synk::f32, shape);
  float* p = a.data<float>();
  for (int64_t i = 0; i < a.numel(); ++i) p[i] = static_cast<float>(i) * scale + offset;
  return a;
}

inline synk::VarValues npz_sample() {
  synk::Array special(synk::f32, {6});
  float* s = special.data<float>();
  s[0] = std::numeric_limits<float>::quiet_NaN();  // 0x7fc00000
  s[1] = std::bit_cast<float>(0x7fc12345u);        // a NaN with a payload
  s[2] = -0.f;
  s[3] = std::numeric_limits<float>::infinity();
  s[4] = std::numeric_limits<float>::denorm_min();
  s[5] = -std::numeric_limits<float>::max();
  synk::Array ints(synk::i32, {5});
  for (int i = 0; i < 5; ++i)
    ints.data<int32_t>()[i] = i == 4 ? std::numeric_limits<int32_t>::min() : i * 7 - 3;
  synk::VarValues v;
  v.emplace_back("l1/W", ramp({3, 4}, 0.25f, -1.f));
  v.emplace_back("l1/b", ramp({4}, 0.5f, 0.f));
  v.emplace_back("steps", ints);
  v.emplace_back("t", synk::Array::scalar_f32(42.f));
  v.emplace_back("empty", synk::Array(synk::f32, {0, 3}));
  v.emplace_back("special", special);
  v.emplace_back("caf\xc3\xa9/\xce\xbb", ramp({2}, 1.f, 1.f));  // "café/λ"
  return v;
}

}  // namespace synk_test
