// exec/cpu/lanes.hpp — 16 floats as one GCC vector, for the CPU kernels
// that keep their register tiles in such vectors (gemm_small.cpp,
// kernels_attention.cpp): a zmm register in an AVX-512 clone, two ymm in an
// AVX2 one, four xmm in the baseline. Loaded and stored with memcpy
// (unaligned).
#pragma once

#include <cstdint>
#include <cstring>

namespace synk::cpu::lanes {

constexpr int64_t kLanes = 16;
typedef float vf __attribute__((vector_size(kLanes * sizeof(float))));

[[gnu::always_inline]] inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

}  // namespace synk::cpu::lanes
