// tests/cuda_emu/nccl_segment.hpp — the shared memory the ranks of one
// emulated NCCL communicator exchange data through, how they find it, and how
// a rank waits on its peers without ever hanging on a dead or aborted one
// (the transport under nccl.cpp).
//
// Rendezvous, and why nothing is ever left behind: the segment is a memfd
// (no name in /dev/shm or anywhere else), so the kernel frees it when the
// last rank unmaps it, whether the ranks exit, die or are SIGKILLed. The
// 128-byte unique id names an abstract Unix socket (Linux's abstract
// namespace: no file either, the name vanishes when its socket closes or its
// process dies). Rank 0 creates the memfd, binds that name and hands the
// memfd (SCM_RIGHTS) to each other rank that connects; once all have it,
// rank 0 closes the socket. Ranks may be processes (forked before or after
// the id was made) or threads of one process.
//
// Waiting: every rank has a doorbell (a futex word in its slot) that peers
// ring after each change it may be waiting for. A waiter re-checks its
// condition, the communicator's poison flag (any rank's abort or error), its
// own stop flag (ncclCommAbort here) and, every 50 ms, whether the peers it
// waits for are still alive (pidfd, recorded at join) and still members
// (not destroyed), so a dead or departed peer becomes an error within about
// a tenth of a second and an abort wakes every waiter at once.
#pragma once

#include <nccl.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace synk_emu::nccl {

// Bytes of one rank's share of a collective exchanged per step, and of one
// point-to-point chunk. Larger data goes in several steps.
inline constexpr size_t kCollChunk = size_t{1} << 20;
inline constexpr size_t kP2PChunk = size_t{256} << 10;

// What a rank is about to run, published before a collective's first
// barrier: all ranks compare them, so mismatched collectives are an error
// (NCCL would hang or corrupt data) instead of a hang.
// ncclGetUniqueId: a fresh random id (no resource is created until rank 0 joins).
ncclResult_t make_id(ncclUniqueId* out);
// Whether `id` came from make_id.
bool valid_id(const ncclUniqueId& id);

struct Desc {
  uint64_t seq;    // collectives this communicator ran before
  int32_t kind;    // nccl.cpp's Kind
  int32_t dtype;   // ncclDataType_t
  int32_t op;      // ncclRedOp_t (reductions), else -1
  int32_t root;    // rooted collectives, else -1
  uint64_t count;  // NCCL's count argument
};

struct alignas(64) Slot {
  std::atomic<int32_t> pid;      // 0 until this rank has joined
  std::atomic<int32_t> left;     // 1 once it destroyed its communicator
  std::atomic<uint32_t> bell;    // futex word: bumped when this rank may proceed
  std::atomic<uint64_t> arrive;  // barriers this rank has reached
  Desc desc;
  char text[240];  // why this rank poisoned the communicator
};

// One direction between two ranks: a single buffer of kP2PChunk bytes that
// the sender fills when posted == consumed and the receiver drains.
struct alignas(64) Channel {
  std::atomic<uint64_t> posted;
  std::atomic<uint64_t> consumed;
  uint64_t len;        // bytes in the posted chunk
  uint64_t msg_bytes;  // the whole message's bytes, count and type (checked by the receiver)
  uint64_t msg_count;
  int32_t msg_dtype;
  int32_t first;  // the chunk starts a message
};

struct Header {
  uint64_t magic;
  int32_t nranks;
  std::atomic<int32_t> joined;
  std::atomic<int32_t> poisoned;  // 0, or 1 + the first rank that poisoned the communicator
  std::atomic<int32_t> poison_code;
};

class Segment {
 public:
  Segment() = default;
  ~Segment();  // unmaps and closes; the memory goes when the last rank does
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // Joins the communicator named by `id` as `rank` of `nranks`: returns once
  // every rank has joined, `stop` was set, a joined peer died, or the
  // rendezvous failed (then `err` says why).
  ncclResult_t join(const ncclUniqueId& id, int nranks, int rank, const std::atomic<bool>& stop, std::string& err);

  int nranks() const { return nranks_; }
  int rank() const { return me_; }
  Header* hdr() const { return hdr_; }
  Slot* slot(int r) const;
  char* coll_area(int r) const;  // kCollChunk bytes of rank r's share
  Channel* chan(int src, int dst) const;
  char* chan_buf(int src, int dst) const;

  // Wakes rank r (or every other rank) after a change it may wait for.
  void ring(int r) const;
  void ring_all() const;

  // Waits until pred() holds. `awaited`: the ranks the condition depends on
  // (their death or departure ends the wait; empty: all). Returns ncclSuccess,
  // or an error with `err` set: ncclRemoteError for a peer's death, abort or
  // error, ncclInvalidUsage for a departed peer, ncclSystemError when `stop`
  // was set (this rank aborted).
  template <class Pred>
  ncclResult_t wait(Pred pred, const std::vector<int>& awaited, const std::atomic<bool>& stop, std::string& err);

  // Marks the communicator failed for every rank (first caller wins) and
  // wakes them; `why` is what the peers report.
  void poison(ncclResult_t code, const std::string& why) const;
  // Records that this rank destroyed its communicator (peers waiting on it fail).
  void leave() const;

 private:
  // One wait step: the checks besides the condition, then a futex sleep.
  ncclResult_t wait_step(uint32_t seen, const std::vector<int>& awaited, const std::atomic<bool>& stop,
                         std::string& err, int& spins, int64_t& next_check_ns);
  // Whether a peer in `awaited` exited or destroyed its communicator.
  ncclResult_t check_peers(const std::vector<int>& awaited, std::string& err);
  ncclResult_t map(int fd, std::string& err);
  void open_pidfds();
  size_t bytes_for(int nranks) const;

  int nranks_ = 0;
  int me_ = -1;
  int fd_ = -1;
  void* base_ = nullptr;
  size_t size_ = 0;
  Header* hdr_ = nullptr;
  std::vector<int> pidfd_;  // per rank; -1 for this process or when pidfd_open failed
  std::vector<int> pid_;
};

template <class Pred>
ncclResult_t Segment::wait(Pred pred, const std::vector<int>& awaited, const std::atomic<bool>& stop,
                           std::string& err) {
  int spins = 0;
  int64_t next_check_ns = 0;
  for (;;) {
    const uint32_t seen = slot(me_)->bell.load(std::memory_order_acquire);
    if (pred()) return ncclSuccess;
    const ncclResult_t r = wait_step(seen, awaited, stop, err, spins, next_check_ns);
    if (r == ncclSuccess) continue;
    // A peer that did its part and then left, died or aborted has still
    // done what this rank waits for: only a condition still unmet fails.
    if (r != ncclSystemError && pred()) return ncclSuccess;
    if (r != ncclSystemError) poison(r, err);
    return r;
  }
}

}  // namespace synk_emu::nccl
