// scatter: rank r gets the r-th block of the root's buffer (Comm::scatter).
// nccl-tests' size: the root's whole ranks x count buffer; busbw factor
// (n-1)/n.
#include "table.hpp"

namespace bench::coll {
namespace {

struct Scatter {
  static constexpr Info info{.name = "scatter", .rooted = true, .split = true};
  static double bus_factor(int n) { return double(n - 1) / n; }
  static Counts counts(const Shape& s) { return {.in = s.rank == s.root ? s.count * s.ranks : 0, .out = s.count}; }
  template <class T> static void init(const Shape& s, T* in, T*) {
    if (s.rank == s.root)
      for (size_t i = 0; i < s.count * s.ranks; ++i) in[i] = value<T>(0, i, s.op);
  }
  template <class T> static uint64_t check(const Shape& s, const T* out) {
    uint64_t wrong = 0;
    for (size_t i = 0; i < s.count; ++i) wrong += out[i] != value<T>(0, s.rank * s.count + i, s.op);
    return wrong;
  }
  static void run(Comm& c, const Shape& s, ElemType t, const void* in, void* out, StreamHandle st) {
    c.scatter(in, out, s.count, t, s.root, st);
  }
};
SYNK_COLLECTIVE(Scatter);

}  // namespace
}  // namespace bench::coll
