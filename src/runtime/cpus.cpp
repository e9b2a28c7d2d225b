// src/runtime/cpus.cpp — synk::cpu_count() (usable CPUs: affinity, capped by
// a cgroup CPU quota) and the default rank count of synk::fork().
#include <sched.h>
#include <unistd.h>

#include <atomic>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "runtime/core.hpp"

namespace synk {

namespace {

std::atomic<int> g_unpinned{0};
std::atomic<pid_t> g_pinner{0};

// CPUs a quota allows ("max" or absent: no limit), rounded up.
int quota_cpus(double quota, double period) {
  if (quota <= 0 || period <= 0) return INT_MAX;
  return std::max(1, static_cast<int>(std::ceil(quota / period - 1e-9)));
}

// cgroup v2: cpu.max of this process's cgroup and of every parent.
int cgroup2_limit(const std::string& rel) {
  int best = INT_MAX;
  std::string path = rel;
  for (;;) {
    std::ifstream f("/sys/fs/cgroup" + path + (path == "/" ? "" : "/") + "cpu.max");
    std::string q;
    double period = 0;
    if (f >> q >> period && q != "max") best = std::min(best, quota_cpus(std::atof(q.c_str()), period));
    if (path == "/" || path.empty()) break;
    const size_t k = path.rfind('/');
    path = k == 0 || k == std::string::npos ? "/" : path.substr(0, k);
  }
  return best;
}

// cgroup v1: cfs_quota_us / cfs_period_us of the cpu controller.
int cgroup1_limit(const std::string& rel) {
  for (const char* root : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"}) {
    for (const std::string& p : {std::string(root) + rel, std::string(root)}) {
      std::ifstream q(p + "/cpu.cfs_quota_us"), per(p + "/cpu.cfs_period_us");
      double quota = 0, period = 0;
      if (q >> quota && per >> period && quota > 0) return quota_cpus(quota, period);
    }
  }
  return INT_MAX;
}

}  // namespace

int cpu_count() {
  int n = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
  if (const int u = g_unpinned.load(); u > 0 && ::getpid() == g_pinner.load()) n = u;  // the master, pinned by fork()
  if (n <= 0) n = 1;
  std::ifstream cg("/proc/self/cgroup");
  std::string line;
  int limit = INT_MAX;
  while (std::getline(cg, line)) {
    // "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1)
    const size_t a = line.find(':'), b = line.find(':', a == std::string::npos ? 0 : a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string ctrl = line.substr(a + 1, b - a - 1), rel = line.substr(b + 1);
    if (ctrl.empty()) limit = std::min(limit, cgroup2_limit(rel));
    else if (ctrl.find("cpu") != std::string::npos && ctrl.find("cpuset") == std::string::npos)
      limit = std::min(limit, cgroup1_limit(rel));
  }
  return std::max(1, std::min(n, limit));
}

namespace detail {

void note_unpinned_cpus(int n) noexcept {
  g_pinner.store(::getpid());
  g_unpinned.store(n);
}

namespace {
// A positive count from an environment variable; 0 when unset or empty.
int env_count(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  std::string s(v);
  // OMP_NUM_THREADS may be a list ("4,2"): the first level counts.
  if (const size_t k = s.find(','); k != std::string::npos) s = s.substr(0, k);
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(s.c_str(), &end, 10);
  if (errno || end == s.c_str() || *end != '\0' || x < 1 || x > kMaxRanks)
    throw ArgumentError(std::string("synk::fork: environment variable ") + name + "='" + v +
                        "' is not a rank count in [1, " + std::to_string(kMaxRanks) + "]");
  return static_cast<int>(x);
}
}  // namespace

int default_workers(bool cuda) {
  if (int n = env_count("SYNK_WORKERS")) return n;
  if (cuda) return 0;
  if (int n = env_count("OMP_NUM_THREADS")) return n;
  return cpu_count();
}

}  // namespace detail
}  // namespace synk
