// src/comm/futex.cpp — raw futex system calls (glibc has no wrapper).
#include "comm/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

namespace synk::comm {

FutexWait futex_wait(const uint32_t* word, uint32_t expected, int64_t timeout_ns) noexcept {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
    tsp = &ts;
  }
  // FUTEX_WAIT's timeout is relative (CLOCK_MONOTONIC).
  long rc = ::syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, nullptr, 0);
  if (rc == 0) return FutexWait::woken;
  switch (errno) {
    case ETIMEDOUT: return FutexWait::timed_out;
    case EAGAIN: return FutexWait::value_changed;
    default: return FutexWait::interrupted;
  }
}

void futex_wake(const uint32_t* word, int count) noexcept {
  ::syscall(SYS_futex, word, FUTEX_WAKE, count, nullptr, nullptr, 0);
}

int64_t monotonic_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace synk::comm
