// tests/support/watchdog.hpp — runs a step in a forked child: one that
// might hang (a read of a named pipe) under alarm(), so that a hang fails the
// test instead of stalling the suite, or one whose process state (CUDA
// initialised, the environment changed) must not leak into the test
// process; and the special files such tests need (a FIFO, a unix socket).
// Header only.
#pragma once

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>

#include "synk/error.hpp"

namespace synk_test {

// What fn did in the child: its text, or how the child ended.
struct WatchedOutcome {
  bool hung = false;   // killed by the alarm
  std::string text;    // fn's result, or a description of an odd end
};

// Runs fn in a child with `seconds` to finish; fn's returned text comes
// back through a pipe. The child never runs the parent's exit handlers.
inline WatchedOutcome run_watched(unsigned seconds, const std::function<std::string()>& fn) {
  int p[2];
  if (::pipe(p) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(p[0]);
    ::signal(SIGALRM, SIG_DFL);
    ::alarm(seconds);
    std::string out;
    try {
      out = fn();
    } catch (const std::exception& e) {
      out = std::string("unexpected exception: ") + e.what();
    }
    for (size_t at = 0; at < out.size();) {
      const ssize_t w = ::write(p[1], out.data() + at, out.size() - at);
      if (w <= 0) break;
      at += static_cast<size_t>(w);
    }
    ::_exit(0);
  }
  ::close(p[1]);
  WatchedOutcome r;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    r.text.append(buf, static_cast<size_t>(n));
  }
  ::close(p[0]);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM) {
    r.hung = true;
    r.text = "hung: still running after " + std::to_string(seconds) + " s";
  } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    r.text = "the child ended abnormally (wait status " + std::to_string(st) + "): " + r.text;
  }
  return r;
}

// Runs fn in a forked child and returns its exit status: fn's result (0 for
// what was expected), 98 when it threw (the message on stderr), 128 + the
// signal when the child was killed. The child never runs the parent's exit
// handlers.
template <class F> int exit_code_in_child(F fn) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int code = 99;
    try {
      code = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "in the child: %s\n", e.what());
      code = 98;
    }
    ::_exit(code);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// Runs fn (which should throw IoError) under the watchdog: "IoError: <message>",
// "no error", or what else happened.
inline WatchedOutcome io_error_of(const std::function<void()>& fn, unsigned seconds = 5) {
  return run_watched(seconds, [&]() -> std::string {
    try {
      fn();
    } catch (const synk::IoError& e) {
      return std::string("IoError: ") + e.what();
    } catch (const std::exception& e) {
      return std::string("another exception: ") + e.what();
    }
    return "no error";
  });
}

inline void make_fifo(const std::string& path) {
  if (::mkfifo(path.c_str(), 0600) != 0) throw std::runtime_error("mkfifo " + path + ": " + std::strerror(errno));
}

// A unix socket bound at path (the file stays after the descriptor closes).
inline void make_socket(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw std::runtime_error("socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  const int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (s < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  const int rc = ::bind(s, reinterpret_cast<const sockaddr*>(&a), sizeof a);
  const int err = errno;
  ::close(s);
  if (rc != 0) throw std::runtime_error("bind " + path + ": " + std::strerror(err));
}

}  // namespace synk_test
