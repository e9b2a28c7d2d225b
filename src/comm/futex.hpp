// src/comm/futex.hpp — futex wait/wake on 32-bit words in shared memory.
//
// These are the sleeping half of the spin-then-sleep waits used by the CPU
// collectives (and later the runtime's control block). The words live in a
// MAP_SHARED segment used by different processes, so the calls are the
// shared (non-PRIVATE) futex operations: the kernel keys them by the
// underlying page, not by the address space.
#pragma once

#include <cstdint>

namespace synk::comm {

enum class FutexWait { woken, timed_out, value_changed, interrupted };

// Sleeps while *word == expected, at most timeout_ns nanoseconds (< 0: no
// limit). Spurious wake-ups are possible; callers re-check their condition.
FutexWait futex_wait(const uint32_t* word, uint32_t expected, int64_t timeout_ns) noexcept;

// Wakes up to `count` waiters sleeping on word (INT32_MAX: all).
void futex_wake(const uint32_t* word, int count = INT32_MAX) noexcept;

// Monotonic clock in nanoseconds (CLOCK_MONOTONIC, vDSO: no syscall).
int64_t monotonic_ns() noexcept;

// A pause hint for spin loops (lets the sibling hyperthread run).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace synk::comm
