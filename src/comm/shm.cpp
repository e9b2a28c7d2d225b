// src/comm/shm.cpp — memfd-backed shared-memory segments (see shm.hpp).
#include "comm/shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "synk/error.hpp"

namespace synk::comm {
namespace {

[[noreturn]] void fail(const std::string& call, int err) {
  throw BackendError("shared memory: " + call + " failed: " + std::strerror(err));
}

}  // namespace

SharedSegment SharedSegment::create(size_t bytes, const char* name) {
  const std::string label = name ? name : "synk";
  int fd = ::memfd_create(label.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) fail("memfd_create(" + label + ")", errno);
  SharedSegment seg;
  seg.fd_ = fd;  // from here on the destructor cleans up on any throw
  // memfd is reachable only through this process's fds (and /proc by the same
  // user with ptrace rights); tightening the inode mode costs nothing.
  if (::fchmod(fd, 0600) != 0) fail("fchmod(" + label + ", 0600)", errno);
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0)
    fail("ftruncate(" + label + ", " + std::to_string(bytes) + ")", errno);
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    fail("fcntl(" + label + ", F_ADD_SEALS)", errno);
  if (bytes > 0) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
      fail("mmap(" + label + ", " + std::to_string(bytes) + " bytes, MAP_SHARED)", errno);
    seg.data_ = p;
    seg.size_ = bytes;
  }
  return seg;
}

SharedSegment SharedSegment::adopt(int fd) {
  if (fd < 0) throw BackendError("shared memory: adopt of an invalid fd");
  SharedSegment seg;
  seg.fd_ = fd;
  struct stat st{};
  if (::fstat(fd, &st) != 0) fail("fstat(adopted segment)", errno);
  const size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes > 0) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) fail("mmap(adopted segment, " + std::to_string(bytes) + " bytes, MAP_SHARED)", errno);
    seg.data_ = p;
    seg.size_ = bytes;
  }
  return seg;
}

SharedSegment::SharedSegment(SharedSegment&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      fd_(std::exchange(o.fd_, -1)) {}

SharedSegment& SharedSegment::operator=(SharedSegment&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    fd_ = std::exchange(o.fd_, -1);
  }
  return *this;
}

SharedSegment::~SharedSegment() { reset(); }

void SharedSegment::reset() noexcept {
  if (data_) ::munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
  data_ = nullptr;
  size_ = 0;
  fd_ = -1;
}

}  // namespace synk::comm
