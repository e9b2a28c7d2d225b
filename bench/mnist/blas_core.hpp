// Picks OpenBLAS's AVX-512 kernels on CPUs that Debian's OpenBLAS 0.3.21
// does not recognise (e.g. AMD Zen 4, which it treats as Haswell and gives
// AVX2 kernels: sgemm runs ~1.7x slower). OpenBLAS reads OPENBLAS_CORETYPE
// once, when it is loaded, so the only way to choose from inside the
// program is to set it and re-execute before doing anything else.
#pragma once

namespace mnist {

// If OPENBLAS_CORETYPE is unset, SYNK_BLAS_CORE is not "default", and the
// CPU has AVX-512 F/BW/DQ/VL: sets OPENBLAS_CORETYPE=SKYLAKEX and execv's
// /proc/self/exe with the same arguments. Returns normally otherwise (or if
// the exec fails).
void maybe_reexec_for_blas_core(char** argv);

// The OpenBLAS core in use, for the benchmark's report.
const char* blas_core_name();

}  // namespace mnist
