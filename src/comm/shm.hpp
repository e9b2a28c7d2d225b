// src/comm/shm.hpp — an anonymous shared-memory segment (private header).
//
// Why memfd: the segment has no name anywhere (nothing in /dev/shm), so it
// disappears with the last process that maps it or holds its fd, even when
// every process is SIGKILLed. A segment created before fork() is inherited by
// the forked workers at the same address, which is how the runtime and the
// CPU collectives share control words and staging buffers.
//
//   auto seg = synk::comm::SharedSegment::create(1 << 20, "synk-data");
//   std::memset(seg.data(), 0, seg.size());
//   if (fork() == 0) { static_cast<char*>(seg.data())[0] = 1; _exit(0); }
//
// The memory is zero-filled, sized once (the size is sealed, so no process
// can shrink it under another's mapping and cause SIGBUS), and readable only
// by the owning user.
#pragma once

#include <cstddef>

namespace synk::comm {

class SharedSegment {
 public:
  SharedSegment() noexcept = default;  // empty: data() == nullptr, size() == 0

  // Creates and maps a zero-filled segment of `bytes` bytes (0 is allowed and
  // maps nothing). `name` only labels it in /proc/<pid>/maps ("memfd:name").
  // Throws synk::BackendError naming the failing call and errno text.
  static SharedSegment create(size_t bytes, const char* name = "synk");
  // Maps a segment another process made (its memfd, received over a socket;
  // the segment takes ownership of fd). The size is the memfd's. Throws
  // synk::BackendError (and closes fd) if it cannot be mapped.
  static SharedSegment adopt(int fd);

  SharedSegment(SharedSegment&& o) noexcept;
  SharedSegment& operator=(SharedSegment&& o) noexcept;
  SharedSegment(const SharedSegment&) = delete;
  SharedSegment& operator=(const SharedSegment&) = delete;
  ~SharedSegment();  // unmaps and closes; never throws

  void* data() const noexcept { return data_; }
  size_t size() const noexcept { return size_; }
  // The memfd (close-on-exec); -1 when empty. Owned by the segment.
  int fd() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  // Unmaps and closes now (what the destructor does).
  void reset() noexcept;

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace synk::comm
