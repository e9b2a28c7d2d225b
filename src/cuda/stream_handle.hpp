// src/cuda/stream_handle.hpp — a CUDA stream named without the CUDA
// headers: cudaStream_t is `CUstream_st*`, so a StreamHandle is one, and
// host-only code (the comms' interface, the runtime, the benchmarks) passes
// streams around in every build. nullptr is the legacy default stream (and
// what a CPU rank passes).
#pragma once

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace synk::cuda {

using StreamHandle = CUstream_st*;

}  // namespace synk::cuda
