// tests/support/null_comm.hpp — a comm::Comm whose collectives do nothing,
// for tests of what must notice such a comm (the collective table's
// expected values) and of the interface's defaults (a comm that cannot
// reduce its peers' buffers).
#pragma once

#include <span>

#include "comm/comm.hpp"

namespace synk_test {

class NullComm final : public synk::comm::Comm {
 public:
  NullComm(int rank, int size, int device, const char* name) : rank_(rank), size_(size), device_(device), name_(name) {}
  int rank() const noexcept override { return rank_; }
  int size() const noexcept override { return size_; }
  int device() const noexcept override { return device_; }
  const char* backend() const noexcept override { return name_; }
  using ElemType = synk::comm::ElemType;
  using StreamHandle = synk::comm::StreamHandle;
  void all_reduce(const void*, void*, size_t, ElemType, synk::ReduceOp, StreamHandle) override {}
  void reduce(const void*, void*, size_t, ElemType, synk::ReduceOp, int, StreamHandle) override {}
  void broadcast(void*, size_t, ElemType, int, StreamHandle) override {}
  void all_gather(const void*, void*, size_t, ElemType, StreamHandle) override {}
  void gatherv(const void*, void*, std::span<const size_t>, ElemType, int, StreamHandle) override {}
  void scatterv(const void*, void*, std::span<const size_t>, ElemType, int, StreamHandle) override {}
  void gather(const void*, void*, size_t, ElemType, int, StreamHandle) override {}
  void scatter(const void*, void*, size_t, ElemType, int, StreamHandle) override {}
  void wait() override {}

 private:
  int rank_, size_, device_;
  const char* name_;
};

}  // namespace synk_test
