// gather: the root gets every rank's buffer, in rank order (Comm::gather).
// nccl-tests' size: the whole ranks x count result; busbw factor (n-1)/n.
#include "table.hpp"

namespace bench::coll {
namespace {

struct Gather {
  static constexpr Info info{.name = "gather", .rooted = true, .split = true};
  static double bus_factor(int n) { return double(n - 1) / n; }
  static Counts counts(const Shape& s) { return {.in = s.count, .out = s.rank == s.root ? s.count * s.ranks : 0}; }
  template <class T> static void init(const Shape& s, T* in, T*) {
    for (size_t i = 0; i < s.count; ++i) in[i] = value<T>(s.rank, i, s.op);
  }
  template <class T> static uint64_t check(const Shape& s, const T* out) {
    uint64_t wrong = 0;
    if (s.rank == s.root)
      for (int r = 0; r < s.ranks; ++r)
        for (size_t i = 0; i < s.count; ++i) wrong += out[r * s.count + i] != value<T>(r, i, s.op);
    return wrong;
  }
  static void run(Comm& c, const Shape& s, ElemType t, const void* in, void* out, StreamHandle st) {
    c.gather(in, out, s.count, t, s.root, st);
  }
};
SYNK_COLLECTIVE(Gather);

}  // namespace
}  // namespace bench::coll
