// tests/support/proc_probe.hpp — the leak probe: what this process (or
// another) holds, read from /proc. One copy for the test suite and for
// synk-stress (bench/stress/fault_matrix.hpp), linked as the static library
// synk_test_support (tests/support/CMakeLists.txt). Linux only; nothing here
// depends on synk itself.
//
//   const int before = synk_test::memfd_segments();
//   { synk::Runtime rt = synk::fork({.workers = 3}); /* ... */ }
//   // after close(): no child left (zombies count), no segment held
//   EXPECT_TRUE(synk_test::children().empty());
//   EXPECT_EQ(synk_test::memfd_segments(), before);
#pragma once

#include <set>
#include <string>
#include <vector>

namespace synk_test {

// Children of this process, as every one of its threads sees them
// (/proc/self/task/*/children), zombies included: a child not yet reaped is
// still a leak. `except` is left out (e.g. synk::detail::fork_server_pid(),
// which a process with CUDA ranks keeps for later forks); 0 leaves out none.
std::vector<int> children(int except = 0);

// The fds of process `pid` ("self" or a number) that are synk memfd
// segments, as /proc/<pid>/fd/<n> paths (stat() them to see the segment).
std::vector<std::string> memfd_fds(const std::string& pid = "self");

// synk memfd segments that process `pid` still holds: its mappings of them
// plus its fds to them (a segment both mapped and open counts twice).
int memfd_segments(const std::string& pid = "self");

// Entries of /dev/shm whose name contains "synk" (the runtime names none; a
// new one would be a segment others could open or that outlives its run).
std::set<std::string> dev_shm_synk();

// Process `pid` exists and is not a zombie.
bool alive(int pid);

}  // namespace synk_test
