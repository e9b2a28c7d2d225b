// bench/collectives/table.hpp — the collective table: one small file per
// collective (all_reduce.cpp, broadcast.cpp, ...: its buffer sizes, the data
// every rank starts with, the value every rank must end with, the
// bus-bandwidth factor and the comm call), over one harness (harness.hpp:
// the checked call, the timing, the nccl-tests row). synk-collectives
// (main.cpp) benchmarks it, and the conformance tests
// (tests/test_collectives_conformance.cpp on one node, tests/mpi/collectives.cpp
// over several) run every entry on every comm::Comm of the build.
//
// A new collective is one file here, e.g. reduce_scatter.cpp (CMake picks up
// every .cpp of this folder; the file registers itself):
//
//   struct ReduceScatter {
//     static constexpr Info info{.name = "reduce_scatter", .reduces = true, .split = true};
//     static double bus_factor(int n) { return double(n - 1) / n; }
//     static Counts counts(const Shape& s) { return {.in = s.count * s.ranks, .out = s.count}; }
//     template <class T> static void init(const Shape& s, T* in, T*) { ... }
//     template <class T> static uint64_t check(const Shape& s, const T* out) { ... }  // #wrong
//     static void run(Comm& c, const Shape& s, ElemType t, const void* in, void* out, StreamHandle st) {
//       c.reduce_scatter(in, out, s.count, t, s.op, st);
//     }
//   };
//   SYNK_COLLECTIVE(ReduceScatter);  // after the struct, in the file's namespace
//
// The data are small integers (exact in every type), so results are
// compared for equality (a floating-point avg within 1e-6: NCCL scales
// before it sums). Uses only the comm interface (src/comm/comm.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "comm/comm.hpp"

namespace bench::coll {

using synk::ReduceOp;
using synk::comm::Comm;
using synk::comm::ElemType;
using synk::comm::StreamHandle;

// One call of a collective, as this rank makes it.
struct Shape {
  int ranks = 1;
  int rank = 0;
  int root = 0;        // rooted collectives
  size_t count = 0;    // the comm call's count (elements per rank)
  ReduceOp op = ReduceOp::sum;  // reducing collectives
};

// This rank's buffers for a call, in elements (0: not touched on this rank).
struct Counts {
  size_t in = 0, out = 0;
};

// What an entry is, besides its functions.
struct Info {
  const char* name = "";
  bool reduces = false;  // takes a ReduceOp (the table's redop column)
  bool rooted = false;   // takes a root
  bool split = false;    // nccl-tests' size is the whole ranks x count buffer, not one rank's count
};

// A table entry, type-erased (SYNK_COLLECTIVE builds it from the struct).
struct Collective {
  Info info;
  double (*bus_factor)(int ranks);  // busbw = algbw x this (nccl-tests)
  Counts (*counts)(const Shape&);
  // Sets this rank's input, and its output where the collective reads it
  // (broadcast works in place); host memory, `counts` elements each.
  void (*init)(const Shape&, ElemType, void* in, void* out);
  // Elements of this rank's output that differ from the expected value.
  uint64_t (*check)(const Shape&, ElemType, const void* out);
  // The collective on `comm` (issued; the harness waits for it).
  void (*run)(Comm&, const Shape&, ElemType, const void* in, void* out, StreamHandle);
};

// Every entry, ordered by name.
const std::vector<const Collective*>& table();
const Collective* find(std::string_view name);  // nullptr if none
std::string names(std::string_view sep);        // "all_gather|all_reduce|..."

// ---- the data every entry draws from ---------------------------------------------------

// Element i of rank r's input: small integers, exact in every type; for
// prod, 1, -1 and 2 (magnitudes stay small over many ranks).
template <class T> T value(int rank, size_t i, ReduceOp op) {
  if (op == ReduceOp::prod) return static_cast<T>(((i + rank) % 5 == 0) ? 2 : ((i + rank) % 7 == 0 ? -1 : 1));
  return static_cast<T>(static_cast<long>((i * 7 + static_cast<size_t>(rank) * 3) % 61) - 30);
}
// What no correct output holds (outputs start as this before a checked call).
template <class T> constexpr T kUnset = static_cast<T>(12345);

template <class T> T combine(T a, T b, ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg: return a + b;
    case ReduceOp::prod: return a * b;
    case ReduceOp::max: return std::max(a, b);
    case ReduceOp::min: return std::min(a, b);
  }
  return a;
}
// Element i reduced over ranks 0..ranks-1 in rank order (avg = sum / ranks).
template <class T> T reduced(int ranks, size_t i, ReduceOp op) {
  T acc = value<T>(0, i, op);
  for (int r = 1; r < ranks; ++r) acc = combine(acc, value<T>(r, i, op), op);
  return op == ReduceOp::avg ? static_cast<T>(acc / static_cast<T>(ranks)) : acc;
}
// Exact, except a floating-point avg: NCCL computes it as a sum of
// pre-scaled values (x * 1/n), which may differ from sum / n in the last bit.
template <class T> bool differs(T got, T want, ReduceOp op) {
  if constexpr (std::is_floating_point_v<T>) {
    if (op == ReduceOp::avg) return !(std::fabs(got - want) <= T(1e-6) * std::max(T(1), std::fabs(want)));
  }
  return got != want;
}

// ---- building an entry -----------------------------------------------------------------

namespace detail {
// Calls f.template operator()<T>() for the C++ type of t.
template <class F> decltype(auto) with_type(ElemType t, F&& f) {
  switch (t) {
    case ElemType::i32: return f.template operator()<int32_t>();
    case ElemType::f64: return f.template operator()<double>();
    case ElemType::i64: return f.template operator()<int64_t>();
    case ElemType::f32: break;
  }
  return f.template operator()<float>();
}
bool add(const Collective* c);  // registers an entry (table() order is by name)
}  // namespace detail

template <class C> const Collective* make_entry() {
  static const Collective c{
      C::info, &C::bus_factor, &C::counts,
      [](const Shape& s, ElemType t, void* in, void* out) {
        detail::with_type(t, [&]<class T>() { C::template init<T>(s, static_cast<T*>(in), static_cast<T*>(out)); });
      },
      [](const Shape& s, ElemType t, const void* out) -> uint64_t {
        return detail::with_type(t, [&]<class T>() { return C::template check<T>(s, static_cast<const T*>(out)); });
      },
      &C::run};
  return &c;
}

}  // namespace bench::coll

// Adds the entry struct C to the table (in C's namespace, after C).
#define SYNK_COLLECTIVE(C) \
  [[maybe_unused]] static const bool synk_collective_##C = ::bench::coll::detail::add(::bench::coll::make_entry<C>())
