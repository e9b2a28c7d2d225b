// kernels/dropout_bits.hpp — the bits of a dropout mask, defined once for the
// CPU executor, the CUDA executor's host side and the CUDA kernel.
//
// Both executors must draw the same mask for the same seed, rank, dropout
// op and call, bit for bit (a function gives the same result on either
// device). Keys: key_base(seed, rank, stream) per dropout op, then
// call_key(base, call) per call (the CUDA executor keeps the call counter
// on the device). Elements: the index is split into 2^32 blocks; block_key
// gives each block two 32-bit keys and element_hash two keyed murmur3
// finaliser rounds of the in-block index (two rounds, so that masks of
// different keys are not shifted copies of each other); an element is kept
// (value `scale`) when its hash is >= the threshold.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SYNK_HOST_DEVICE __host__ __device__
#else
#define SYNK_HOST_DEVICE
#endif

namespace synk::dropout {

SYNK_HOST_DEVICE inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// 32-bit finaliser (murmur3): cheap, and vectorisable unlike 64-bit mixes.
SYNK_HOST_DEVICE inline uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

inline uint64_t key_base(uint64_t seed, int rank, int64_t stream) {
  uint64_t k = splitmix64(seed ^ 0x5d1c0e7f00d5eedull);
  k = splitmix64(k ^ static_cast<uint64_t>(static_cast<uint32_t>(rank)));
  return splitmix64(k ^ static_cast<uint64_t>(stream));
}

SYNK_HOST_DEVICE inline uint64_t call_key(uint64_t base, uint64_t call) { return splitmix64(base ^ call); }

// The two keys of the 2^32-element block that starts at element `block_start`.
SYNK_HOST_DEVICE inline uint64_t block_key(uint64_t key, uint64_t block_start) {
  return splitmix64(key + block_start);
}

// i: the element's index within its block; kb: block_key().
SYNK_HOST_DEVICE inline uint32_t element_hash(uint32_t i, uint64_t kb) {
  const uint32_t h = fmix32((i * 0x9e3779b9u) ^ static_cast<uint32_t>(kb));
  return fmix32(h + static_cast<uint32_t>(kb >> 32));
}

// Scale of a kept element and the keep threshold p * 2^32, for 0 < p < 1.
struct Params {
  float scale;
  uint32_t thr;
};
inline Params params(float p) {
  const double t = static_cast<double>(p) * 4294967296.0;
  return {1.f / (1.f - p), t >= 4294967295.0 ? 0xffffffffu : static_cast<uint32_t>(t)};
}

}  // namespace synk::dropout
