// reduce_scatter: rank r gets the reduction of every rank's block r
// (Comm::reduce_scatter; the sharded optimizer's gradient step).
// nccl-tests' size: the whole ranks x count input; busbw factor (n-1)/n.
#include "table.hpp"

namespace bench::coll {
namespace {

struct ReduceScatter {
  static constexpr Info info{.name = "reduce_scatter", .reduces = true, .split = true};
  static double bus_factor(int n) { return double(n - 1) / n; }
  static Counts counts(const Shape& s) { return {.in = s.count * s.ranks, .out = s.count}; }
  // Element i of block q is element q * count + i of the whole: every block
  // holds different values, so a block sent to the wrong rank is seen.
  template <class T> static void init(const Shape& s, T* in, T*) {
    for (size_t i = 0; i < s.count * s.ranks; ++i) in[i] = value<T>(s.rank, i, s.op);
  }
  template <class T> static uint64_t check(const Shape& s, const T* out) {
    uint64_t wrong = 0;
    for (size_t i = 0; i < s.count; ++i)
      wrong += differs(out[i], reduced<T>(s.ranks, static_cast<size_t>(s.rank) * s.count + i, s.op), s.op);
    return wrong;
  }
  static void run(Comm& c, const Shape& s, ElemType t, const void* in, void* out, StreamHandle st) {
    c.reduce_scatter(in, out, s.count, t, s.op, st);
  }
};
SYNK_COLLECTIVE(ReduceScatter);

}  // namespace
}  // namespace bench::coll
