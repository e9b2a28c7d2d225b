// tests/support/random_values.hpp — reproducible test inputs: n floats in
// [lo, hi) from a 64-bit LCG seeded by `seed` (header only).
#pragma once

#include <cstdint>
#include <vector>

namespace synk_test {

inline std::vector<float> rnd(int64_t n, float lo, float hi, uint32_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t s = seed * 2654435761u + 1;
  for (float& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = lo + (hi - lo) * static_cast<float>((s >> 40) & 0xffffff) / 16777216.f;
  }
  return v;
}

}  // namespace synk_test
