// src/data/user_file.cpp — see user_file.hpp.
#include "data/user_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace synk::detail {
namespace {

std::string not_regular(mode_t mode) {
  const char* kind = S_ISDIR(mode)    ? "a directory"
                     : S_ISFIFO(mode) ? "a named pipe (FIFO)"
                     : S_ISSOCK(mode) ? "a socket"
                     : S_ISCHR(mode)  ? "a character device"
                     : S_ISBLK(mode)  ? "a block device"
                                      : "something other than a file";
  return std::string("is ") + kind + ", not a regular file";
}

std::string open_error(int err) { return std::string("cannot open: ") + std::strerror(err); }

}  // namespace

int open_regular_for_read(const std::string& path, std::string& why, int& err) {
  err = 0;
  // stat() first: it never blocks and opens nothing, so a device is refused
  // before its driver sees an open().
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    err = errno;
    why = open_error(err);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    why = not_regular(st.st_mode);
    return -1;
  }
  // O_NONBLOCK: should the path have become a FIFO since the stat, open()
  // still returns at once; O_NOCTTY: nor may a terminal become ours.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    err = errno;
    // A socket swapped in makes open() fail with ENXIO: say what it is.
    if (err == ENXIO && ::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      why = not_regular(st.st_mode);
      err = 0;
    } else {
      why = open_error(err);
    }
    return -1;
  }
  if (::fstat(fd, &st) != 0) {
    err = errno;
    why = std::string("cannot stat: ") + std::strerror(err);
    ::close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {  // swapped in since the stat
    why = not_regular(st.st_mode);
    ::close(fd);
    return -1;
  }
  // A regular file: back to ordinary blocking reads (O_NONBLOCK would make
  // reads of a file under a mandatory lock fail with EAGAIN).
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    err = errno;
    why = std::string("cannot set blocking reads: ") + std::strerror(err);
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string refuse_replacing(const std::string& path) {
  struct stat st {};
  // Missing, or not reachable: the writer's own create and rename say
  // what is wrong, if anything.
  if (::stat(path.c_str(), &st) != 0) return {};
  return S_ISREG(st.st_mode) ? std::string() : not_regular(st.st_mode);
}

}  // namespace synk::detail
