// tests/mpi/node_args.hpp — the command line the mpi test programs share:
// `--workers W` (every node W ranks) or `--workers W0,W1,...` (node k has
// Wk ranks; nodes past the list take the last value).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace synk_test {

// Ranks per node as given ({1} without --workers; values as written).
inline std::vector<int> workers_by_node(int argc, char** argv) {
  std::vector<int> by_node{1};
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--workers") != 0) continue;
    by_node.clear();
    for (const char* p = argv[i + 1]; *p;) {
      by_node.push_back(std::atoi(p));
      while (*p && *p != ',') ++p;
      if (*p == ',') ++p;
    }
  }
  if (by_node.empty()) by_node.push_back(1);
  return by_node;
}

inline int workers_of(const std::vector<int>& by_node, int node) {
  return by_node[std::min<size_t>(static_cast<size_t>(node), by_node.size() - 1)];
}

}  // namespace synk_test
