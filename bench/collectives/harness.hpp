// bench/collectives/harness.hpp — runs the collective table (table.hpp) on
// one rank's comm::Comm: the checked call (#wrong), the timed calls and the
// nccl-tests row (size, count, type, redop, time, algbw, busbw, #wrong),
// and the conformance sweep of every entry. Every rank of the comm makes the
// same calls in the same order.
//
//   bench::coll::Buffers b(bytes);                          // host memory (a CPU comm)
//   const Shape s = shape_of(*find("all_reduce"), bytes, ElemType::f32, comm.size(), comm.rank(), 0, ReduceOp::sum);
//   const uint64_t wrong = checked_call(*find("all_reduce"), comm, s, ElemType::f32, b);
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "table.hpp"

namespace bench::coll {

// Device memory a device comm (NCCL, host-staged) works on: two buffers
// and the copies to and from them; the table's values go through the host.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual void* in() = 0;
  virtual void* out() = 0;
  virtual void to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void to_host(void* dst, const void* src, size_t bytes) = 0;
};

// A rank's two buffers of `bytes` each: the host copies the table fills
// and checks, and the ones the comm gets (the same, or `device`'s). The
// host copies are first touched here, in the rank that uses them.
class Buffers {
 public:
  explicit Buffers(size_t bytes, DeviceMemory* device = nullptr);
  size_t bytes() const noexcept { return bytes_; }
  void* host_in() noexcept { return in_.data(); }
  void* host_out() noexcept { return out_.data(); }
  DeviceMemory* device() noexcept { return device_; }
  void* in() noexcept { return device_ ? device_->in() : host_in(); }
  void* out() noexcept { return device_ ? device_->out() : host_out(); }

 private:
  size_t bytes_;
  std::vector<uint64_t> in_, out_;  // 8-byte aligned for every element type
  DeviceMemory* device_;
};

// The call once, checked: this rank's output starts as kUnset and its input
// as the entry sets it, the call runs and is waited for, and the result is
// this rank's #wrong. Throws ArgumentError if the buffers are too small.
uint64_t checked_call(const Collective& c, Comm& comm, const Shape& s, ElemType t, Buffers& b);
// The call once, waited for (the timed calls).
void call(const Collective& c, Comm& comm, const Shape& s, ElemType t, Buffers& b);

// ---- the nccl-tests table --------------------------------------------------------------

// The call for an nccl-tests size: `bytes` is one rank's buffer, or the
// whole ranks x count buffer of a split collective (the gather family).
Shape shape_of(const Collective& c, size_t bytes, ElemType t, int ranks, int rank, int root, ReduceOp op);

// This rank's part of one size: the checked call, `warmup` calls, then
// `iters` calls, each after barrier(), each timed.
struct RankTimes {
  uint64_t wrong = 0;
  std::vector<double> seconds;  // per iteration
};
RankTimes time_rank(const Collective& c, Comm& comm, const Shape& s, ElemType t, Buffers& b, int warmup, int iters,
                    const std::function<void()>& barrier);

struct Row {
  size_t bytes = 0, count = 0;
  double time_us = 0, algbw = 0, busbw = 0;
  uint64_t wrong = 0;
};
// The row of a size from each iteration's time (the slowest rank's): the
// median, algbw = bytes / time, busbw = algbw x the entry's factor.
Row make_row(const Collective& c, int ranks, size_t bytes, size_t count, std::vector<double> seconds, uint64_t wrong);
void print_header(std::FILE* f);
// redop is "none" for a collective that does not reduce.
void print_row(std::FILE* f, const Collective& c, const Row& row, const char* type, const char* redop);

// ---- conformance -----------------------------------------------------------------------

struct Conformance {
  uint64_t calls = 0, wrong = 0;
  std::string first;  // the first call with a wrong element, described
};
// Every entry x element type x reduce op (reducing entries) x root (0 and
// the last rank, rooted entries) x per-rank count, on this rank: its own
// #wrong. `device`, if given, holds conformance_bytes() per buffer.
Conformance check_every(Comm& comm, std::span<const size_t> counts, DeviceMemory* device = nullptr);
size_t conformance_bytes(int ranks, std::span<const size_t> counts);

}  // namespace bench::coll
