// reduce: the root gets the reduction of every rank's buffer
// (Comm::reduce). nccl-tests' size: one rank's buffer; busbw factor 1.
#include "table.hpp"

namespace bench::coll {
namespace {

struct Reduce {
  static constexpr Info info{.name = "reduce", .reduces = true, .rooted = true};
  static double bus_factor(int) { return 1.0; }
  static Counts counts(const Shape& s) { return {.in = s.count, .out = s.rank == s.root ? s.count : 0}; }
  template <class T> static void init(const Shape& s, T* in, T*) {
    for (size_t i = 0; i < s.count; ++i) in[i] = value<T>(s.rank, i, s.op);
  }
  template <class T> static uint64_t check(const Shape& s, const T* out) {
    uint64_t wrong = 0;
    if (s.rank == s.root)
      for (size_t i = 0; i < s.count; ++i) wrong += differs(out[i], reduced<T>(s.ranks, i, s.op), s.op);
    return wrong;
  }
  static void run(Comm& c, const Shape& s, ElemType t, const void* in, void* out, StreamHandle st) {
    c.reduce(in, out, s.count, t, s.op, s.root, st);
  }
};
SYNK_COLLECTIVE(Reduce);

}  // namespace
}  // namespace bench::coll
