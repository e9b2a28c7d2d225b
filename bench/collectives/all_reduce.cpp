// all_reduce: every rank gets the reduction of every rank's buffer
// (Comm::all_reduce). nccl-tests' size: one rank's buffer; busbw factor
// 2(n-1)/n (each byte goes out and comes back once in a ring).
#include "table.hpp"

namespace bench::coll {
namespace {

struct AllReduce {
  static constexpr Info info{.name = "all_reduce", .reduces = true};
  static double bus_factor(int n) { return 2.0 * (n - 1) / n; }
  static Counts counts(const Shape& s) { return {.in = s.count, .out = s.count}; }
  template <class T> static void init(const Shape& s, T* in, T*) {
    for (size_t i = 0; i < s.count; ++i) in[i] = value<T>(s.rank, i, s.op);
  }
  template <class T> static uint64_t check(const Shape& s, const T* out) {
    uint64_t wrong = 0;
    for (size_t i = 0; i < s.count; ++i) wrong += differs(out[i], reduced<T>(s.ranks, i, s.op), s.op);
    return wrong;
  }
  static void run(Comm& c, const Shape& s, ElemType t, const void* in, void* out, StreamHandle st) {
    c.all_reduce(in, out, s.count, t, s.op, st);
  }
};
SYNK_COLLECTIVE(AllReduce);

}  // namespace
}  // namespace bench::coll
