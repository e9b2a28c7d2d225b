// src/cuda/timeline.hpp — GpuMarks (cuda/marks.hpp) on CUDA events: the
// GPU tracks of the runtime's timeline for a CUDA rank (its compute stream
// and its comm's stream).
//
// Each span is a pair of timing events recorded on its stream; flush()
// records one more event on an idle stream, waits for it, reads the host
// clock, and places every span by cudaEventElapsedTime against that
// anchor (events of one device share a clock, whatever their stream). The
// placement is off by the anchor's launch latency (microseconds), the same
// for every span of a flush. Events are reused. Tracing only: a failed
// event call drops the span, never the training step.
//
// Private header; only files built with SYNK_HAVE_CUDA include it.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "cuda/marks.hpp"

namespace synk::cuda {

class StreamTimeline final : public GpuMarks {
 public:
  StreamTimeline() = default;
  ~StreamTimeline() override;
  StreamTimeline(const StreamTimeline&) = delete;
  StreamTimeline& operator=(const StreamTimeline&) = delete;

  void begin(StreamHandle s, uint16_t kind, uint64_t call, int32_t fn) override;
  void end(StreamHandle s) override;
  void comm_context(uint16_t kind, uint64_t call, int32_t fn) override;
  void comm_begin(StreamHandle s) override;
  void comm_end(StreamHandle s) override;
  void flush(StreamHandle s, Sink sink) override;

  // Closed spans waiting for flush() (tests; bounded by kMaxPending).
  size_t pending() const noexcept { return closed_.size(); }
  static constexpr size_t kMaxPending = 1 << 14;  // more are dropped until the next flush

 private:
  struct Open {
    uint16_t kind;
    uint64_t call;
    int32_t fn;
    cudaEvent_t start;
  };
  struct Closed {
    Open what;
    uint16_t lane;
    cudaEvent_t end;
  };
  // An event recorded on s now, or null (the span is then dropped).
  cudaEvent_t mark(StreamHandle s);
  void release(cudaEvent_t e);
  void close(Open o, uint16_t lane, StreamHandle s);

  std::vector<cudaEvent_t> free_;
  std::vector<Open> compute_;  // open compute spans, innermost last
  Open comm_{};                // the open comm span (start null: none)
  Open context_{};             // what the next comm span is
  std::vector<Closed> closed_;
};

}  // namespace synk::cuda
