// src/data/npz_internal.hpp — the .npz reader/writer's private entry points
// (synk/checkpoint.hpp has the public ones): the same calls with the name
// of the public function to put in error messages, and a test hook.
#pragma once

#include <cstdint>
#include <string>

#include "synk/runtime.hpp"

namespace synk::detail {

// A size or offset at or above this is written in a ZIP64 extra field (and
// the archive gets a ZIP64 end record when its central directory's offset or
// size is). The ZIP limit, 0xffffffff, unless a test lowers it to write
// small ZIP64 archives.
extern uint64_t npz_zip64_threshold;

void write_npz(const std::string& path, const VarValues& values, const char* who);
VarValues read_npz(const std::string& path, const char* who);

}  // namespace synk::detail
