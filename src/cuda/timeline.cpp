// src/cuda/timeline.cpp — the GPU tracks' events (cuda/timeline.hpp).
#include "synk/config.hpp"

#if SYNK_HAVE_CUDA

#include "cuda/timeline.hpp"

#include <time.h>

namespace synk::cuda {

namespace {
int64_t host_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}
}  // namespace

StreamTimeline::~StreamTimeline() {
  for (cudaEvent_t e : free_) cudaEventDestroy(e);
  for (const Open& o : compute_) cudaEventDestroy(o.start);
  if (comm_.start) cudaEventDestroy(comm_.start);
  for (const Closed& c : closed_) {
    cudaEventDestroy(c.what.start);
    cudaEventDestroy(c.end);
  }
}

cudaEvent_t StreamTimeline::mark(StreamHandle s) {
  cudaEvent_t e = nullptr;
  if (!free_.empty()) {
    e = free_.back();
    free_.pop_back();
  } else if (cudaEventCreate(&e) != cudaSuccess) {
    cudaGetLastError();  // not sticky; the span is dropped
    return nullptr;
  }
  if (cudaEventRecord(e, s) != cudaSuccess) {
    cudaGetLastError();
    release(e);
    return nullptr;
  }
  return e;
}

void StreamTimeline::release(cudaEvent_t e) {
  if (e) free_.push_back(e);
}

void StreamTimeline::close(Open o, uint16_t lane, StreamHandle s) {
  cudaEvent_t end = closed_.size() < kMaxPending ? mark(s) : nullptr;
  if (!end || !o.start) {
    release(end);
    release(o.start);
    return;
  }
  closed_.push_back({o, lane, end});
}

void StreamTimeline::begin(StreamHandle s, uint16_t kind, uint64_t call, int32_t fn) {
  compute_.push_back({kind, call, fn, mark(s)});
}

void StreamTimeline::end(StreamHandle s) {
  if (compute_.empty()) return;
  const Open o = compute_.back();
  compute_.pop_back();
  close(o, Lane::compute, s);
}

void StreamTimeline::comm_context(uint16_t kind, uint64_t call, int32_t fn) { context_ = {kind, call, fn, nullptr}; }

void StreamTimeline::comm_begin(StreamHandle s) {
  release(comm_.start);  // a collective that threw before its end: its span is dropped
  comm_ = context_;
  comm_.start = mark(s);
}

void StreamTimeline::comm_end(StreamHandle s) {
  const Open o = comm_;
  comm_ = Open{};
  if (o.start) close(o, Lane::comm, s);
}

void StreamTimeline::flush(StreamHandle s, Sink sink) {
  if (closed_.empty()) return;
  // The anchor: the streams are idle, so it runs as soon as it is queued;
  // the host reads its clock once it has.
  cudaEvent_t anchor = mark(s);
  bool ok = anchor && cudaEventSynchronize(anchor) == cudaSuccess;
  const int64_t t_anchor = host_ns();
  for (const Closed& c : closed_) {
    float ms0 = 0, ms1 = 0;
    if (ok && cudaEventElapsedTime(&ms0, c.what.start, anchor) == cudaSuccess &&
        cudaEventElapsedTime(&ms1, c.end, anchor) == cudaSuccess)
      sink(c.what.kind, t_anchor - static_cast<int64_t>(static_cast<double>(ms0) * 1e6),
           t_anchor - static_cast<int64_t>(static_cast<double>(ms1) * 1e6), c.what.call, c.what.fn, c.lane);
    else
      cudaGetLastError();
    release(c.what.start);
    release(c.end);
  }
  closed_.clear();
  release(anchor);
}

}  // namespace synk::cuda

#endif  // SYNK_HAVE_CUDA
