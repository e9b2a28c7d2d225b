// src/cuda/context.hpp — which CUDA device this process uses, and whether
// it has a CUDA context at all.
//
// A child forked from a process that has initialised CUDA cannot use CUDA,
// so every call that initialises CUDA in this process records that first
// (note_cuda_context: a CudaSession, a device query here such as
// cuda::device_count(), a rank's use_rank_device), and synk::fork() then
// refuses CUDA ranks (or reuses the fork server made before) instead of
// forking ranks whose first CUDA call fails.
//
// Usable in every build: without CUDA, cuda_devices() is 0 and
// use_rank_device() does nothing. No CUDA header.
#pragma once

#include <string>

namespace synk::detail {

// Counts the visible GPUs in a forked child (0 without CUDA), so this
// process stays free of CUDA; `why` gets what the CUDA runtime said.
int cuda_devices(std::string* why = nullptr);
// Makes `device` current for good in CUDA rank `rank`, before its first CUDA
// object (so no CUDA call there ever touches another GPU). Throws
// BackendError naming the rank and device if CUDA refuses.
void use_rank_device(int rank, int device);
// Set when this process initialised CUDA: it may not fork CUDA ranks then.
void note_cuda_context() noexcept;
bool cuda_context_noted() noexcept;

}  // namespace synk::detail
