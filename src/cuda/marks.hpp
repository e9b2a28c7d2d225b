// src/cuda/marks.hpp — timing marks on a device rank's streams, for the GPU
// tracks of the runtime's timeline (trace/trace.hpp): a span opened on a
// stream starts when the stream gets to it and ends when the stream gets to
// its end, as the GPU ran it, not as the host queued it. StreamTimeline
// (cuda/timeline.hpp) implements it on CUDA events; the runtime opens the
// compute stream's spans and sets what the comm's spans are, the comm
// (comm/comm.hpp: Comm::set_marks) opens and closes them around each
// collective on its own stream, and flush() turns every closed span into
// host-clock times once the work is done.
//
// No CUDA header: the comms' interface and the runtime include it in every
// build.
#pragma once

#include <cstdint>

#include "cuda/stream_handle.hpp"

namespace synk::cuda {

class GpuMarks {
 public:
  enum Lane : uint16_t { compute = 1, comm = 2 };  // lane 0: the rank's host track
  // Receives one finished span: CLOCK_MONOTONIC ns, as trace/trace.hpp records.
  using Sink = void (*)(uint16_t kind, int64_t t0, int64_t t1, uint64_t call, int32_t fn, uint16_t lane);
  virtual ~GpuMarks() = default;
  // A span of `kind` on the compute stream `s`, from the work queued on it next.
  virtual void begin(StreamHandle s, uint16_t kind, uint64_t call, int32_t fn) = 0;
  virtual void end(StreamHandle s) = 0;  // the innermost open compute span
  // What the comm's next spans are (kind, call, function).
  virtual void comm_context(uint16_t kind, uint64_t call, int32_t fn) = 0;
  // A collective on the comm's own stream `s` (the comm calls these).
  virtual void comm_begin(StreamHandle s) = 0;
  virtual void comm_end(StreamHandle s) = 0;
  // Waits for the marked work, hands every closed span to `sink`, forgets
  // them. Call it when the streams are idle (after a training step).
  virtual void flush(StreamHandle s, Sink sink) = 0;
};

}  // namespace synk::cuda
