// src/runtime/nodes.hpp — the runtime's multi-node pieces used by the call
// path (runtime/nodes.cpp; docs/multinode.md).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "wire/wire.hpp"

namespace synk::detail {

struct RuntimeCore;

// Every node master sends its ranks' results (views, in local rank order)
// to every other; returns every rank's view in global rank order, pointing
// into `storage`. The same list on every node, so every node combines to
// the same outputs.
std::vector<ResultView> exchange_results(RuntimeCore& c, const std::vector<ResultView>& mine,
                                         std::vector<uint8_t>& storage, const std::string& what);

// FNV-1a of bytes: the fingerprint of an encoded command in the call
// checks between nodes (RuntimeCore::agree).
inline uint64_t fingerprint(std::span<const uint8_t> bytes) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t b : bytes) h = (h ^ b) * 1099511628211ull;
  return h;
}

}  // namespace synk::detail
