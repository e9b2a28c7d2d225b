// tests/support/proc_probe.cpp — the /proc reads of proc_probe.hpp.
#include "support/proc_probe.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

namespace synk_test {

namespace {

constexpr const char* kSegment = "memfd:synk";  // how a synk segment shows in maps and fd links

}  // namespace

std::vector<int> children(int except) {
  std::vector<int> out;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/children");
      int p;
      while (f >> p)
        if (except == 0 || p != except) out.push_back(p);
    }
    ::closedir(d);
  }
  return out;
}

std::vector<std::string> memfd_fds(const std::string& pid) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(("/proc/" + pid + "/fd").c_str())) {
    while (dirent* e = ::readdir(d)) {
      char buf[256];
      const std::string p = "/proc/" + pid + "/fd/" + e->d_name;
      const ssize_t k = ::readlink(p.c_str(), buf, sizeof buf - 1);
      if (k > 0 && std::string(buf, static_cast<size_t>(k)).find(kSegment) != std::string::npos) out.push_back(p);
    }
    ::closedir(d);
  }
  return out;
}

int memfd_segments(const std::string& pid) {
  int n = 0;
  std::ifstream maps("/proc/" + pid + "/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(kSegment) != std::string::npos) ++n;
  return n + static_cast<int>(memfd_fds(pid).size());
}

std::set<std::string> dev_shm_synk() {
  std::set<std::string> out;
  if (DIR* d = ::opendir("/dev/shm")) {
    while (dirent* e = ::readdir(d))
      if (std::strstr(e->d_name, "synk")) out.insert(e->d_name);
    ::closedir(d);
  }
  return out;
}

bool alive(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t p = line.rfind(')');
  return p != std::string::npos && p + 2 < line.size() && line[p + 2] != 'Z';
}

}  // namespace synk_test
