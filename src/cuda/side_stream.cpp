// src/cuda/side_stream.cpp — SideStream (cuda/side_stream.hpp). Built only
// with CUDA (SYNK_HAVE_CUDA).
#include "synk/config.hpp"

#if SYNK_HAVE_CUDA

#include "cuda/side_stream.hpp"

#include <cuda_runtime.h>

#include "cuda/device.hpp"

namespace synk::cuda {

namespace {
cudaEvent_t ev(void* e) { return static_cast<cudaEvent_t>(e); }
}  // namespace

SideStream::SideStream() {
  try {
    cudaStream_t s = nullptr;
    SYNK_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    stream_ = s;
    cudaEvent_t e = nullptr;
    SYNK_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    ready_ = e;
    SYNK_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    done_ = e;
  } catch (...) {
    release();  // a constructor that throws gets no destructor call
    throw;
  }
}

SideStream::~SideStream() { release(); }

void SideStream::release() noexcept {
  if (done_) (void)cudaEventDestroy(ev(done_));
  if (ready_) (void)cudaEventDestroy(ev(ready_));
  if (stream_) (void)cudaStreamDestroy(stream_);
  done_ = ready_ = nullptr;
  stream_ = nullptr;
  (void)cudaGetLastError();
}

void SideStream::wait_for(StreamHandle caller) {
  SYNK_CUDA_CHECK(cudaEventRecord(ev(ready_), caller));
  SYNK_CUDA_CHECK(cudaStreamWaitEvent(stream_, ev(ready_), 0));
}

void SideStream::hand_back(StreamHandle caller) {
  SYNK_CUDA_CHECK(cudaEventRecord(ev(done_), stream_));
  SYNK_CUDA_CHECK(cudaStreamWaitEvent(caller, ev(done_), 0));
}

int SideStream::done_status() const noexcept { return static_cast<int>(cudaEventQuery(ev(done_))); }

}  // namespace synk::cuda

#endif  // SYNK_HAVE_CUDA
