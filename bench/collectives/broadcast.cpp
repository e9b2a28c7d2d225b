// broadcast: every rank gets the root's buffer (Comm::broadcast, in place
// in `out`). nccl-tests' size: the buffer; busbw factor 1.
#include "table.hpp"

namespace bench::coll {
namespace {

struct Broadcast {
  static constexpr Info info{.name = "broadcast", .rooted = true};
  static double bus_factor(int) { return 1.0; }
  static Counts counts(const Shape& s) { return {.in = 0, .out = s.count}; }
  template <class T> static void init(const Shape& s, T*, T* out) {
    for (size_t i = 0; i < s.count; ++i) out[i] = s.rank == s.root ? value<T>(s.root, i, s.op) : kUnset<T>;
  }
  template <class T> static uint64_t check(const Shape& s, const T* out) {
    uint64_t wrong = 0;
    for (size_t i = 0; i < s.count; ++i) wrong += out[i] != value<T>(s.root, i, s.op);
    return wrong;
  }
  static void run(Comm& c, const Shape& s, ElemType t, const void*, void* out, StreamHandle st) {
    c.broadcast(out, s.count, t, s.root, st);
  }
};
SYNK_COLLECTIVE(Broadcast);

}  // namespace
}  // namespace bench::coll
