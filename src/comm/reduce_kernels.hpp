// src/comm/reduce_kernels.hpp — the element-wise loops of the CPU
// collectives (private): combine two or N sources with sum/avg/max/min/prod.
//
// Why a separate file: these are the only compute loops of src/comm, written
// so the compiler vectorises them (restrict pointers; out may alias one
// source exactly, handled by separate in-place variants), and kept apart
// from the protocol code. Integer sum/prod are computed in unsigned
// arithmetic so overflow wraps (defined) instead of being UB. Sources are
// always combined left to right in the order given (the callers pass rank
// order), so every rank computes bitwise the same result.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "comm/cpu_group.hpp"

namespace synk::comm::kernels {

template <class T> struct Sum {
  static T f(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(a) + static_cast<U>(b));
    } else {
      return a + b;
    }
  }
};
template <class T> struct Prod {
  static T f(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(a) * static_cast<U>(b));
    } else {
      return a * b;
    }
  }
};
template <class T> struct Max {
  static T f(T a, T b) { return a < b ? b : a; }
};
template <class T> struct Min {
  static T f(T a, T b) { return b < a ? b : a; }
};

// out[i] = fin(F(a[i], b[i])), where fin divides by `div` when avg.
template <class T, class F, bool Avg>
void combine2_disjoint(T* __restrict out, const T* __restrict a, const T* __restrict b,
                       size_t n, T div) {
  for (size_t i = 0; i < n; ++i) {
    T v = F::f(a[i], b[i]);
    out[i] = Avg ? static_cast<T>(v / div) : v;
  }
}
template <class T, class F, bool Avg>
void combine2_out_is_a(T* __restrict out, const T* __restrict b, size_t n, T div) {
  for (size_t i = 0; i < n; ++i) {
    T v = F::f(out[i], b[i]);
    out[i] = Avg ? static_cast<T>(v / div) : v;
  }
}
template <class T, class F, bool Avg>
void combine2_out_is_b(T* __restrict out, const T* __restrict a, size_t n, T div) {
  for (size_t i = 0; i < n; ++i) {
    T v = F::f(a[i], out[i]);
    out[i] = Avg ? static_cast<T>(v / div) : v;
  }
}
template <class T, class F>
void accumulate(T* __restrict acc, const T* __restrict b, size_t n) {
  for (size_t i = 0; i < n; ++i) acc[i] = F::f(acc[i], b[i]);
}
template <class T>
void finish_avg(T* __restrict out, const T* __restrict acc, size_t n, T div) {
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<T>(acc[i] / div);
}
template <class T>
void copy(T* __restrict out, const T* __restrict acc, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = acc[i];
}

// memcpy with non-temporal stores: for outputs far larger than the caches,
// skipping the read-for-ownership of every destination line saves a third
// of the DRAM traffic, and the data would be evicted before reuse anyway.
// Callers issue stream_fence() before anyone else may read dst.
inline void stream_copy(void* dst, const void* src, size_t n) {
#if defined(__SSE2__)
  auto* d = static_cast<char*>(dst);
  auto* s = static_cast<const char*>(src);
  const size_t head = std::min(n, static_cast<size_t>(-reinterpret_cast<uintptr_t>(d) & 15));
  std::memcpy(d, s, head);
  d += head, s += head, n -= head;
  for (; n >= 64; n -= 64, d += 64, s += 64) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
    __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
    __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
    _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
    _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
  }
  std::memcpy(d, s, n);
#else
  std::memcpy(dst, src, n);
#endif
}
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// out = src[0] op src[1] op ... op src[ns-1] (op applied left to right; avg
// divides the sum by ns). out may alias any one source.
template <class T, class F, bool Avg>
void combine_n(T* out, const T* const* src, int ns, size_t n, bool stream) {
  const T div = static_cast<T>(ns);
  if (stream) {
    // Combine an L1-sized block, then stream it out (out may alias a source:
    // each block is read completely before it is written).
    constexpr size_t kBlock = 8192 / sizeof(T);
    alignas(64) T acc[kBlock];
    for (size_t b = 0; b < n; b += kBlock) {
      const size_t m = std::min(kBlock, n - b);
      if (ns == 1) {
        stream_copy(out + b, src[0] + b, m * sizeof(T));
        continue;
      }
      if (ns == 2) {
        combine2_disjoint<T, F, Avg>(acc, src[0] + b, src[1] + b, m, div);
      } else {
        combine2_disjoint<T, F, false>(acc, src[0] + b, src[1] + b, m, div);
        for (int s = 2; s < ns; ++s) accumulate<T, F>(acc, src[s] + b, m);
        if (Avg)
          for (size_t i = 0; i < m; ++i) acc[i] = static_cast<T>(acc[i] / div);
      }
      stream_copy(out + b, acc, m * sizeof(T));
    }
    return;
  }
  if (ns == 1) {
    if (out != src[0]) copy<T>(out, src[0], n);
    return;
  }
  if (ns == 2) {
    if (out == src[0]) combine2_out_is_a<T, F, Avg>(out, src[1], n, div);
    else if (out == src[1]) combine2_out_is_b<T, F, Avg>(out, src[0], n, div);
    else combine2_disjoint<T, F, Avg>(out, src[0], src[1], n, div);
    return;
  }
  // More sources: accumulate block by block in an L1-resident buffer, so out
  // may alias any source and each source is read once.
  constexpr size_t kBlock = 2048 / sizeof(T) * 4;  // 8 KiB
  alignas(64) T acc[kBlock];
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t m = std::min(kBlock, n - b);
    combine2_disjoint<T, F, false>(acc, src[0] + b, src[1] + b, m, div);
    for (int s = 2; s < ns; ++s) accumulate<T, F>(acc, src[s] + b, m);
    if (Avg) finish_avg<T>(out + b, acc, m, div);
    else copy<T>(out + b, acc, m);
  }
}

template <class T>
void combine_typed(T* out, const T* const* src, int ns, size_t n, ReduceOp op, bool stream) {
  switch (op) {
    case ReduceOp::sum: return combine_n<T, Sum<T>, false>(out, src, ns, n, stream);
    case ReduceOp::avg: return combine_n<T, Sum<T>, true>(out, src, ns, n, stream);
    case ReduceOp::max: return combine_n<T, Max<T>, false>(out, src, ns, n, stream);
    case ReduceOp::min: return combine_n<T, Min<T>, false>(out, src, ns, n, stream);
    case ReduceOp::prod: return combine_n<T, Prod<T>, false>(out, src, ns, n, stream);
  }
}

// Type-erased entry: src are ns pointers to n elements of type t; `stream`
// writes out with non-temporal stores (then stream_fence() before use).
inline void combine(void* out, const void* const* src, int ns, size_t n, ElemType t, ReduceOp op,
                    bool stream = false) {
  switch (t) {
    case ElemType::f32:
      return combine_typed(static_cast<float*>(out), reinterpret_cast<const float* const*>(src), ns, n, op, stream);
    case ElemType::i32:
      return combine_typed(static_cast<int32_t*>(out), reinterpret_cast<const int32_t* const*>(src), ns, n, op, stream);
    case ElemType::f64:
      return combine_typed(static_cast<double*>(out), reinterpret_cast<const double* const*>(src), ns, n, op, stream);
    case ElemType::i64:
      return combine_typed(static_cast<int64_t*>(out), reinterpret_cast<const int64_t* const*>(src), ns, n, op, stream);
  }
}

}  // namespace synk::comm::kernels
