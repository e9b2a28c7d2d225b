// src/data/user_file.hpp — files the user names (checkpoints, .npz, IDX),
// opened for reading or replaced by a writer without ever blocking on
// something that is not a regular file.
//
// A plain open() of a named pipe waits until a writer opens its other end,
// which may be never; opening a device may have effects of its own (a tape
// rewinds, a terminal becomes the controlling one); a socket cannot be
// opened at all (ENXIO). So the kind of the file is checked first with
// stat(), which never blocks, and again on the opened descriptor (the path
// may have been swapped in between), the open itself being non-blocking.
// Every such file is refused with a reason naming its kind, as a
// directory is.
#pragma once

#include <string>

namespace synk::detail {

// A regular file opened read-only (O_CLOEXEC, blocking reads), or -1 with
// `why` set ("cannot open: <strerror>", or "is a named pipe (FIFO), not a
// regular file", a socket, a character or block device, a directory alike)
// and `err` the errno of the failed call (0 when the file is of another
// kind). The caller owns the descriptor.
int open_regular_for_read(const std::string& path, std::string& why, int& err);

// Empty when a writer may put a new regular file at `path` (nothing is
// there, or a regular file, possibly through a symbolic link); otherwise
// why not, as above ("is a character device, not a regular file"). Never
// opens `path`.
std::string refuse_replacing(const std::string& path);

}  // namespace synk::detail
