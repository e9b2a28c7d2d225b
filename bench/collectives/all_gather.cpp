// all_gather: every rank gets every rank's buffer, in rank order
// (Comm::all_gather). nccl-tests' size: the whole ranks x count result;
// busbw factor (n-1)/n.
#include "table.hpp"

namespace bench::coll {
namespace {

struct AllGather {
  static constexpr Info info{.name = "all_gather", .split = true};
  static double bus_factor(int n) { return double(n - 1) / n; }
  static Counts counts(const Shape& s) { return {.in = s.count, .out = s.count * s.ranks}; }
  template <class T> static void init(const Shape& s, T* in, T*) {
    for (size_t i = 0; i < s.count; ++i) in[i] = value<T>(s.rank, i, s.op);
  }
  template <class T> static uint64_t check(const Shape& s, const T* out) {
    uint64_t wrong = 0;
    for (int r = 0; r < s.ranks; ++r)
      for (size_t i = 0; i < s.count; ++i) wrong += out[r * s.count + i] != value<T>(r, i, s.op);
    return wrong;
  }
  static void run(Comm& c, const Shape& s, ElemType t, const void* in, void* out, StreamHandle st) {
    c.all_gather(in, out, s.count, t, st);
  }
};
SYNK_COLLECTIVE(AllGather);

}  // namespace
}  // namespace bench::coll
