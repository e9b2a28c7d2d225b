// exec/cpu/isa.cpp — which per-CPU clone of a kernel runs.
#include "exec/cpu/kernels.hpp"

#include <cstdlib>
#include <cstring>

namespace synk::cpu {

Isa cpu_isa() {
  static const Isa v = [] {
    Isa best = Isa::base;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      best = Isa::avx512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      best = Isa::avx2;
#endif
    const char* cap = std::getenv("SYNK_CPU_ISA");
    if (cap && std::strcmp(cap, "base") == 0) return Isa::base;
    if (cap && std::strcmp(cap, "avx2") == 0 && best == Isa::avx512) return Isa::avx2;
    return best;
  }();
  return v;
}

}  // namespace synk::cpu
