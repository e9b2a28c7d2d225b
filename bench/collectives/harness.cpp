// bench/collectives/harness.cpp — the table's registry and the harness
// (harness.hpp).
#include "harness.hpp"

#include <algorithm>
#include <chrono>
#include <string_view>

#include "synk/error.hpp"

namespace bench::coll {

namespace {
std::vector<const Collective*>& registry() {
  static std::vector<const Collective*> entries;
  return entries;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

bool detail::add(const Collective* c) {
  auto& r = registry();
  r.insert(std::upper_bound(r.begin(), r.end(), c,
                            [](const Collective* a, const Collective* b) {
                              return std::string_view(a->info.name) < std::string_view(b->info.name);
                            }),
           c);
  return true;
}

const std::vector<const Collective*>& table() { return registry(); }

const Collective* find(std::string_view name) {
  for (const Collective* c : registry())
    if (name == c->info.name) return c;
  return nullptr;
}

std::string names(std::string_view sep) {
  std::string s;
  for (const Collective* c : registry()) {
    if (!s.empty()) s += sep;
    s += c->info.name;
  }
  return s;
}

Buffers::Buffers(size_t bytes, DeviceMemory* device)
    : bytes_(bytes), in_((std::max<size_t>(bytes, 1) + 7) / 8), out_((std::max<size_t>(bytes, 1) + 7) / 8),
      device_(device) {}

void call(const Collective& c, Comm& comm, const Shape& s, ElemType t, Buffers& b) {
  c.run(comm, s, t, b.in(), b.out(), nullptr);
  comm.wait();
}

uint64_t checked_call(const Collective& c, Comm& comm, const Shape& s, ElemType t, Buffers& b) {
  const Counts n = c.counts(s);
  const size_t es = synk::comm::elem_size(t);
  if (std::max(n.in, n.out) > b.bytes() / es)
    throw synk::ArgumentError(std::string(c.info.name) + ": buffers of " + std::to_string(b.bytes()) +
                              " bytes hold fewer than the " + std::to_string(std::max(n.in, n.out)) +
                              " elements of the call");
  detail::with_type(t, [&]<class T>() {
    T* out = static_cast<T*>(b.host_out());
    std::fill(out, out + n.out, kUnset<T>);
  });
  c.init(s, t, b.host_in(), b.host_out());
  if (DeviceMemory* d = b.device()) {
    if (n.in) d->to_device(d->in(), b.host_in(), n.in * es);
    if (n.out) d->to_device(d->out(), b.host_out(), n.out * es);
  }
  call(c, comm, s, t, b);
  if (DeviceMemory* d = b.device(); d && n.out) d->to_host(b.host_out(), d->out(), n.out * es);
  return c.check(s, t, b.host_out());
}

Shape shape_of(const Collective& c, size_t bytes, ElemType t, int ranks, int rank, int root, ReduceOp op) {
  const size_t total = bytes / synk::comm::elem_size(t);
  return {.ranks = ranks,
          .rank = rank,
          .root = root,
          .count = c.info.split ? total / static_cast<size_t>(ranks) : total,
          .op = op};
}

RankTimes time_rank(const Collective& c, Comm& comm, const Shape& s, ElemType t, Buffers& b, int warmup, int iters,
                    const std::function<void()>& barrier) {
  RankTimes r;
  r.wrong = checked_call(c, comm, s, t, b);
  for (int w = 0; w < warmup; ++w) call(c, comm, s, t, b);
  r.seconds.resize(static_cast<size_t>(iters));
  for (int it = 0; it < iters; ++it) {
    barrier();
    const double t0 = now_s();
    call(c, comm, s, t, b);
    r.seconds[static_cast<size_t>(it)] = now_s() - t0;
  }
  return r;
}

Row make_row(const Collective& c, int ranks, size_t bytes, size_t count, std::vector<double> seconds, uint64_t wrong) {
  std::sort(seconds.begin(), seconds.end());
  const size_t k = seconds.size();
  const double t = k == 0 ? 0 : k % 2 ? seconds[k / 2] : 0.5 * (seconds[k / 2 - 1] + seconds[k / 2]);
  Row row;
  row.bytes = bytes;
  row.count = count;
  row.time_us = t * 1e6;
  row.algbw = t > 0 ? static_cast<double>(bytes) / t / 1e9 : 0;
  row.busbw = row.algbw * c.bus_factor(ranks);
  row.wrong = wrong;
  return row;
}

void print_header(std::FILE* f) {
  std::fprintf(f, "#%11s %12s %8s %6s %10s %12s %12s %8s\n", "size(B)", "count", "type", "redop", "time(us)",
               "algbw(GB/s)", "busbw(GB/s)", "#wrong");
}

void print_row(std::FILE* f, const Collective& c, const Row& row, const char* type, const char* redop) {
  std::fprintf(f, "%12zu %12zu %8s %6s %10.2f %12.2f %12.2f %8llu\n", row.bytes, row.count, type,
               c.info.reduces ? redop : "none", row.time_us, row.algbw, row.busbw,
               static_cast<unsigned long long>(row.wrong));
}

size_t conformance_bytes(int ranks, std::span<const size_t> counts) {
  size_t most = 1;
  for (size_t n : counts) most = std::max(most, n);
  return most * static_cast<size_t>(std::max(ranks, 1)) * sizeof(int64_t);
}

Conformance check_every(Comm& comm, std::span<const size_t> counts, DeviceMemory* device) {
  const int n = comm.size();
  Buffers b(conformance_bytes(n, counts), device);
  Conformance res;
  constexpr ElemType kTypes[] = {ElemType::f32, ElemType::i32, ElemType::f64, ElemType::i64};
  constexpr ReduceOp kOps[] = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min, ReduceOp::prod};
  for (const Collective* c : table())
    for (ElemType t : kTypes)
      for (ReduceOp op : kOps) {
        if (!c->info.reduces && op != ReduceOp::sum) continue;
        std::vector<int> roots{0};  // and the last rank, for a rooted entry
        if (c->info.rooted && n > 1) roots.push_back(n - 1);
        for (int root : roots) {
          for (size_t count : counts) {
            const Shape s{.ranks = n, .rank = comm.rank(), .root = root, .count = count, .op = op};
            const uint64_t wrong = checked_call(*c, comm, s, t, b);
            ++res.calls;
            res.wrong += wrong;
            if (wrong && res.first.empty())
              res.first = std::string(c->info.name) + " " + synk::comm::elem_name(t) +
                          (c->info.reduces ? std::string(" ") + synk::comm::redop_name(op) : "") +
                          (c->info.rooted ? " root " + std::to_string(root) : "") + " count " +
                          std::to_string(count) + " on rank " + std::to_string(s.rank) + " of " +
                          std::to_string(n) + " (" + comm.backend() + "): " + std::to_string(wrong) + " wrong";
          }
        }
      }
  return res;
}

}  // namespace bench::coll
