// tests/cuda_emu/nccl_segment.cpp — the emulated NCCL's shared segment:
// rendezvous over an abstract Unix socket, the memfd, doorbells and waits
// (see nccl_segment.hpp for why it leaves nothing behind).
#include "nccl_segment.hpp"

#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <new>
#include <thread>

namespace synk_emu::nccl {

namespace {

constexpr uint64_t kMagic = 0x73796e6b6e63636cULL;  // "synknccl"
constexpr const char kIdMagic[16] = "synk-emu-nccl1";

// The id's bytes: a magic (an id from elsewhere is refused) and a random
// token that names the rendezvous socket.
struct IdLayout {
  char magic[16];
  unsigned char token[24];
};
static_assert(sizeof(IdLayout) <= sizeof(ncclUniqueId));

struct Hello {
  uint64_t magic;
  int32_t nranks;
  int32_t rank;
  int32_t pid;
};
struct Reply {
  int32_t code;  // ncclResult_t; the memfd comes with ncclSuccess
  char text[200];
};

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string errno_text(const char* call) { return std::string(call) + ": " + std::strerror(errno); }

// The abstract socket address for an id ("\0synk-emu-nccl-<token in hex>").
socklen_t rendezvous_addr(const IdLayout& id, sockaddr_un& a) {
  std::memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  std::string name = "synk-emu-nccl-";
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : id.token) {
    name += hex[c >> 4];
    name += hex[c & 15];
  }
  std::memcpy(a.sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

// Whole-message send/receive on a stream socket, giving up when `stop` is set
// or the peer goes away. Returns false with `err` set on failure.
bool send_all(int s, const void* p, size_t n, std::string& err) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    const ssize_t k = ::send(s, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      err = errno_text("send");
      return false;
    }
    c += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// Receives exactly n bytes, and the fd that comes with them if any.
bool recv_all(int s, void* p, size_t n, int* fd, const std::atomic<bool>& stop, std::string& err) {
  char* c = static_cast<char*>(p);
  while (n) {
    pollfd pf{s, POLLIN, 0};
    const int pr = ::poll(&pf, 1, 20);
    if (stop.load()) {
      err = "aborted while joining";
      return false;
    }
    if (pr <= 0) continue;
    iovec iov{c, n};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    const ssize_t k = ::recvmsg(s, &m, MSG_CMSG_CLOEXEC);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (k <= 0) {
      err = k == 0 ? std::string("the peer closed the connection") : errno_text("recvmsg");
      return false;
    }
    for (cmsghdr* h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
      if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS && fd) std::memcpy(fd, CMSG_DATA(h), sizeof(int));
    c += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool send_fd(int s, const Reply& r, int fd, std::string& err) {
  iovec iov{const_cast<Reply*>(&r), sizeof r};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  if (fd >= 0) {
    m.msg_control = ctl;
    m.msg_controllen = sizeof ctl;
    cmsghdr* h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(h), &fd, sizeof fd);
  }
  for (;;) {
    const ssize_t k = ::sendmsg(s, &m, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k != static_cast<ssize_t>(sizeof r)) {
      err = errno_text("sendmsg");
      return false;
    }
    return true;
  }
}

void set_text(char* dst, size_t cap, const std::string& s) {
  const size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = 0;
}

// A process that exited is gone for us even while it is an unreaped zombie
// (forked ranks are siblings; their parent may reap them late).
bool process_gone(int pidfd, int pid) {
  if (pidfd >= 0) {
    pollfd pf{pidfd, POLLIN, 0};
    return ::poll(&pf, 1, 0) > 0;
  }
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const size_t p = line.rfind(')');
  return p != std::string::npos && p + 2 < line.size() && (line[p + 2] == 'Z' || line[p + 2] == 'X');
}

}  // namespace

ncclResult_t make_id(ncclUniqueId* out) {
  IdLayout id{};
  std::memcpy(id.magic, kIdMagic, sizeof id.magic);
  size_t got = 0;
  while (got < sizeof id.token) {
    const ssize_t k = ::getrandom(id.token + got, sizeof id.token - got, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return ncclSystemError;
    got += static_cast<size_t>(k);
  }
  std::memset(out, 0, sizeof *out);
  std::memcpy(out->internal, &id, sizeof id);
  return ncclSuccess;
}

bool valid_id(const ncclUniqueId& id) { return std::memcmp(id.internal, kIdMagic, sizeof kIdMagic) == 0; }

size_t Segment::bytes_for(int n) const {
  const size_t un = static_cast<size_t>(n);
  const size_t slots = round_up(sizeof(Header), 64);
  const size_t coll = round_up(slots + un * sizeof(Slot), 4096);
  const size_t chan = coll + un * kCollChunk;
  const size_t cbuf = round_up(chan + un * un * sizeof(Channel), 4096);
  return cbuf + un * un * kP2PChunk;
}

Slot* Segment::slot(int r) const {
  return reinterpret_cast<Slot*>(static_cast<char*>(base_) + round_up(sizeof(Header), 64)) + r;
}
char* Segment::coll_area(int r) const {
  const size_t coll = round_up(round_up(sizeof(Header), 64) + static_cast<size_t>(nranks_) * sizeof(Slot), 4096);
  return static_cast<char*>(base_) + coll + static_cast<size_t>(r) * kCollChunk;
}
Channel* Segment::chan(int src, int dst) const {
  return reinterpret_cast<Channel*>(coll_area(nranks_)) + (static_cast<size_t>(src) * nranks_ + dst);
}
char* Segment::chan_buf(int src, int dst) const {
  const size_t un = static_cast<size_t>(nranks_);
  char* cbuf = reinterpret_cast<char*>(
      round_up(reinterpret_cast<uintptr_t>(reinterpret_cast<Channel*>(coll_area(nranks_)) + un * un), 4096));
  return cbuf + (static_cast<size_t>(src) * un + dst) * kP2PChunk;
}

Segment::~Segment() {
  for (int fd : pidfd_)
    if (fd >= 0) ::close(fd);
  if (base_) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

ncclResult_t Segment::map(int fd, std::string& err) {
  fd_ = fd;
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    err = errno_text("fstat");
    return ncclSystemError;
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ != bytes_for(nranks_)) {
    err = "the shared segment has the wrong size (nranks differ between ranks?)";
    return ncclInvalidUsage;
  }
  base_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base_ == MAP_FAILED) {
    base_ = nullptr;
    err = errno_text("mmap");
    return ncclSystemError;
  }
  hdr_ = static_cast<Header*>(base_);
  return ncclSuccess;
}

void Segment::open_pidfds() {
  pidfd_.assign(static_cast<size_t>(nranks_), -1);
  pid_.assign(static_cast<size_t>(nranks_), 0);
  const int self = ::getpid();
  for (int r = 0; r < nranks_; ++r) {
    const int pid = slot(r)->pid.load(std::memory_order_acquire);
    pid_[static_cast<size_t>(r)] = pid;
    if (pid <= 0 || pid == self) continue;
    // pidfd_open (Linux 5.3): readable once the process has exited, zombie
    // or not, and immune to pid reuse. Without it, kill(0) and /proc.
    pidfd_[static_cast<size_t>(r)] = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  }
}

ncclResult_t Segment::join(const ncclUniqueId& uid, int nranks, int rank, const std::atomic<bool>& stop,
                           std::string& err) {
  nranks_ = nranks;
  me_ = rank;
  IdLayout id;
  std::memcpy(&id, uid.internal, sizeof id);
  sockaddr_un addr;
  const socklen_t alen = rendezvous_addr(id, addr);
  const int self = ::getpid();

  if (rank == 0) {
    const int fd = ::memfd_create("synk-emu-nccl", MFD_CLOEXEC);
    if (fd < 0) {
      err = errno_text("memfd_create");
      return ncclSystemError;
    }
    if (::ftruncate(fd, static_cast<off_t>(bytes_for(nranks))) != 0) {
      err = errno_text("ftruncate");
      ::close(fd);
      return ncclSystemError;
    }
    if (const ncclResult_t r = map(fd, err); r != ncclSuccess) return r;
    // The memfd is zero-filled; construct the shared objects before any peer sees them.
    hdr_ = new (base_) Header{};
    hdr_->magic = kMagic;
    hdr_->nranks = nranks;
    for (int r = 0; r < nranks; ++r) new (slot(r)) Slot{};
    for (int s = 0; s < nranks; ++s)
      for (int d = 0; d < nranks; ++d) new (chan(s, d)) Channel{};
    slot(0)->pid.store(self, std::memory_order_release);
    hdr_->joined.store(1, std::memory_order_release);

    if (nranks > 1) {
      const int ls = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (ls < 0) {
        err = errno_text("socket");
        return ncclSystemError;
      }
      if (::bind(ls, reinterpret_cast<sockaddr*>(&addr), alen) != 0 || ::listen(ls, nranks) != 0) {
        err = errno == EADDRINUSE ? std::string("the unique id is already in use by a rank 0 (two ranks 0, or an id "
                                                "used for two communicators)")
                                  : errno_text("bind/listen");
        ::close(ls);
        return errno == EADDRINUSE ? ncclInvalidUsage : ncclSystemError;
      }
      std::vector<char> taken(static_cast<size_t>(nranks), 0);
      taken[0] = 1;
      ncclResult_t result = ncclSuccess;
      for (int served = 1; served < nranks && result == ncclSuccess;) {
        pollfd pf{ls, POLLIN, 0};
        const int pr = ::poll(&pf, 1, 20);
        if (stop.load()) {
          err = "aborted while joining";
          result = ncclSystemError;
          break;
        }
        if (pr <= 0) continue;
        const int cs = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
        if (cs < 0) continue;
        Hello h{};
        std::string e;
        if (!recv_all(cs, &h, sizeof h, nullptr, stop, e)) {
          ::close(cs);  // a peer that went away mid-hello; it may retry
          continue;
        }
        Reply rep{};
        if (h.magic != kMagic || h.nranks != nranks) {
          rep.code = ncclInvalidUsage;
          set_text(rep.text, sizeof rep.text,
                   "rank " + std::to_string(h.rank) + " joined with nranks " + std::to_string(h.nranks) +
                       ", rank 0 with " + std::to_string(nranks));
        } else if (h.rank < 1 || h.rank >= nranks || taken[static_cast<size_t>(h.rank)]) {
          rep.code = ncclInvalidUsage;
          set_text(rep.text, sizeof rep.text, "rank " + std::to_string(h.rank) + " joined twice or is out of range");
        }
        if (rep.code != ncclSuccess) {
          err = rep.text;
          result = static_cast<ncclResult_t>(rep.code);
          (void)send_fd(cs, rep, -1, e);
        } else if (send_fd(cs, rep, fd, e)) {
          taken[static_cast<size_t>(h.rank)] = 1;
          ++served;
        }
        ::close(cs);
      }
      ::close(ls);  // the name is gone: a late duplicate rank cannot join
      if (result != ncclSuccess) {
        poison(result, err);
        return result;
      }
    }
  } else {
    int s = -1;
    for (;;) {  // rank 0 may not be listening yet
      if (stop.load()) {
        err = "aborted while waiting for rank 0 to create the communicator";
        return ncclSystemError;
      }
      s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (s < 0) {
        err = errno_text("socket");
        return ncclSystemError;
      }
      if (::connect(s, reinterpret_cast<sockaddr*>(&addr), alen) == 0) break;
      const int e = errno;
      ::close(s);
      if (e != ECONNREFUSED && e != ENOENT && e != EAGAIN && e != EINTR) {
        errno = e;
        err = errno_text("connect");
        return ncclSystemError;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const Hello h{kMagic, nranks, rank, self};
    Reply rep{};
    int fd = -1;
    if (!send_all(s, &h, sizeof h, err) || !recv_all(s, &rep, sizeof rep, &fd, stop, err)) {
      ::close(s);
      if (fd >= 0) ::close(fd);
      err = "joining through rank 0: " + err;
      return stop.load() ? ncclSystemError : ncclRemoteError;
    }
    ::close(s);
    if (rep.code != ncclSuccess || fd < 0) {
      if (fd >= 0) ::close(fd);
      rep.text[sizeof rep.text - 1] = 0;
      err = rep.text;
      return rep.code != ncclSuccess ? static_cast<ncclResult_t>(rep.code) : ncclSystemError;
    }
    if (const ncclResult_t r = map(fd, err); r != ncclSuccess) return r;
    if (hdr_->magic != kMagic || hdr_->nranks != nranks) {
      err = "the shared segment does not match this communicator";
      return ncclInvalidUsage;
    }
    slot(rank)->pid.store(self, std::memory_order_release);
    hdr_->joined.fetch_add(1, std::memory_order_acq_rel);
    ring_all();
  }

  // Everyone has the segment (or is about to map it): wait until all have
  // recorded their pid, watching the ones that did.
  const ncclResult_t r =
      wait([&] { return hdr_->joined.load(std::memory_order_acquire) == nranks_; }, {}, stop, err);
  if (r != ncclSuccess) return r;
  open_pidfds();
  return ncclSuccess;
}

void Segment::ring(int r) const {
  Slot* s = slot(r);
  s->bell.fetch_add(1, std::memory_order_acq_rel);
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&s->bell), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void Segment::ring_all() const {
  for (int r = 0; r < nranks_; ++r)
    if (r != me_) ring(r);
}

void Segment::poison(ncclResult_t code, const std::string& why) const {
  if (!hdr_) return;
  set_text(slot(me_)->text, sizeof slot(me_)->text, why);
  int32_t expected = 0;
  if (hdr_->poisoned.compare_exchange_strong(expected, me_ + 1, std::memory_order_acq_rel)) {
    hdr_->poison_code.store(code, std::memory_order_release);
  }
  ring_all();
  ring(me_);
}

void Segment::leave() const {
  if (!hdr_) return;
  slot(me_)->left.store(1, std::memory_order_release);
  ring_all();
}

ncclResult_t Segment::check_peers(const std::vector<int>& awaited, std::string& err) {
  auto check = [&](int r) -> ncclResult_t {
    if (r == me_) return ncclSuccess;
    const int pid = slot(r)->pid.load(std::memory_order_acquire);
    if (pid <= 0) return ncclSuccess;  // not joined yet: nothing to watch
    const size_t ur = static_cast<size_t>(r);
    const int pidfd = ur < pidfd_.size() ? pidfd_[ur] : -1;
    if (pid != ::getpid() && process_gone(pidfd, pid)) {
      err = "rank " + std::to_string(r) + " (pid " + std::to_string(pid) + ") exited while rank " +
            std::to_string(me_) + " waited for it";
      return ncclRemoteError;
    }
    if (slot(r)->left.load(std::memory_order_acquire)) {
      err = "rank " + std::to_string(r) + " destroyed its communicator while rank " + std::to_string(me_) +
            " waited for it (mismatched calls?)";
      return ncclInvalidUsage;
    }
    return ncclSuccess;
  };
  if (awaited.empty()) {
    for (int r = 0; r < nranks_; ++r)
      if (const ncclResult_t x = check(r); x != ncclSuccess) return x;
  } else {
    for (int r : awaited)
      if (const ncclResult_t x = check(r); x != ncclSuccess) return x;
  }
  return ncclSuccess;
}

ncclResult_t Segment::wait_step(uint32_t seen, const std::vector<int>& awaited, const std::atomic<bool>& stop,
                                std::string& err, int& spins, int64_t& next_check_ns) {
  if (stop.load(std::memory_order_acquire)) {
    err = "the communicator was aborted on this rank";
    return ncclSystemError;
  }
  if (const int p = hdr_->poisoned.load(std::memory_order_acquire)) {
    const int by = p - 1;
    err = by == me_ ? std::string(slot(me_)->text)
                    : "rank " + std::to_string(by) + " failed or aborted the communicator: " + slot(by)->text;
    return ncclRemoteError;
  }
  // A collective's peers usually arrive within microseconds: spin a little
  // before sleeping (a futex round trip costs tens of microseconds).
  if (spins < 200) {
    ++spins;
    if (spins > 50) std::this_thread::yield();
    return ncclSuccess;
  }
  const int64_t t = now_ns();
  if (t >= next_check_ns) {
    next_check_ns = t + 50'000'000;
    if (const ncclResult_t r = check_peers(awaited, err); r != ncclSuccess) return r;
  }
  timespec ts{0, 20'000'000};  // bounded: the checks above run at least every 20 ms
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&slot(me_)->bell), FUTEX_WAIT, seen, &ts, nullptr, 0);
  return ncclSuccess;
}

}  // namespace synk_emu::nccl
