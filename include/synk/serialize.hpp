// synk/serialize.hpp — graphs and functions to a versioned binary format and
// back, as workers receive them.
//
// Layout: magic "SYNKGRPH", u32 version, u64 payload size, u32 CRC32 of the
// payload, then the payload (nodes, then functions). Reading checks every
// length against the bytes left, so a truncated or corrupted buffer gives a
// FormatError, never a crash or an unbounded allocation.
//
//   std::vector<uint8_t> buf = synk::serialize(g, {train.def()});
//   synk::Graph g2; auto fns = synk::deserialize(buf.data(), buf.size(), g2);
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "synk/graph.hpp"

namespace synk {

inline constexpr uint32_t kFormatVersion = 1;

std::vector<uint8_t> serialize(const Graph& g, const std::vector<FunctionDef>& fns);

// Rebuilds into `into`, which must be empty. Returns the functions.
std::vector<FunctionDef> deserialize(const uint8_t* data, size_t size, Graph& into);

}  // namespace synk
