// fuzz/fuzz_deserialize.cpp — libFuzzer target for synk::deserialize, the
// parser every worker runs on the graphs and functions the master sends.
//
// Each input is tried twice: as it is, and "resealed" (the header's payload
// size and CRC32 recomputed). Without resealing nearly every mutation would
// stop at the checksum and the node/function parsers behind it would never
// be reached. The corpus (fuzz/corpus/deserialize/) holds real serialised
// graphs, so mutations start from valid buffers.
//
// Beyond "no crash, no sanitizer report", it checks the documented contract:
//  - a bad buffer gives a synk::FormatError (nothing else: no bad_alloc,
//    length_error, out_of_range) and leaves the target graph empty;
//  - a buffer that is accepted serialises back to exactly the same bytes.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

#include "synk/error.hpp"
#include "synk/graph.hpp"
#include "synk/serialize.hpp"

namespace {

// "SYNKGRPH" | u32 version | u64 payload size | u32 CRC32(payload), LE.
constexpr size_t kHeader = 24;

[[noreturn]] void violated(const char* what, const char* detail) {
  std::fprintf(stderr, "fuzz_deserialize: contract violated: %s%s%s\n", what,
               detail ? ": " : "", detail ? detail : "");
  std::abort();  // libFuzzer records the input as a crash
}

void put_le(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void check(const uint8_t* data, size_t size) {
  synk::Graph g;
  std::vector<synk::FunctionDef> fns;
  try {
    fns = synk::deserialize(data, size, g);
  } catch (const synk::FormatError&) {
    if (g.size() != 0) violated("a FormatError left nodes in the target graph", nullptr);
    return;
  } catch (const std::exception& e) {
    violated("deserialize threw something other than FormatError", e.what());
  }
  const std::vector<uint8_t> again = synk::serialize(g, fns);
  if (again.size() != size || std::memcmp(again.data(), data, size) != 0)
    violated("an accepted buffer does not serialise back to the same bytes", nullptr);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check(data, size);
  if (size >= kHeader) {
    std::vector<uint8_t> sealed(data, data + size);
    const size_t payload = size - kHeader;
    put_le(sealed.data() + 12, payload, 8);
    const uLong crc = crc32_z(crc32_z(0, nullptr, 0), sealed.data() + kHeader, payload);
    put_le(sealed.data() + 20, crc, 4);
    check(sealed.data(), sealed.size());
  }
  return 0;
}
