// fuzz/fuzz_checkpoint.cpp — libFuzzer target for the checkpoint reader
// (synk::decode_npz, the parser under read_npz and load_checkpoint): ZIP
// end records (plain and ZIP64), the central directory, local headers,
// stored and deflated members, .npy headers.
//
// Contract checked: failures are synk::IoError only (naming the label); an
// accepted archive holds unique, non-empty names and arrays whose byte count
// is their element count x 4; encoding it again and decoding that gives the
// same names, dtypes, shapes and bits; and a stored archive's checksums are
// checked (an accepted input with one data byte flipped is refused).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <set>
#include <string>
#include <vector>

#include "synk/checkpoint.hpp"
#include "synk/error.hpp"

namespace {

[[noreturn]] void violated(const char* what, const std::string& detail = "") {
  std::fprintf(stderr, "fuzz_checkpoint: contract violated: %s%s%s\n", what, detail.empty() ? "" : ": ",
               detail.c_str());
  std::abort();
}

synk::VarValues decode(const uint8_t* data, size_t size, const char* what) {
  try {
    return synk::decode_npz(data, size, "fuzz.npz");
  } catch (const synk::IoError& e) {
    if (std::string(e.what()).find("'fuzz.npz'") == std::string::npos) violated("IoError without the label", e.what());
    throw;
  } catch (const std::exception& e) {
    violated(what, e.what());
  }
}

bool same(const synk::Array& a, const synk::Array& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  synk::VarValues v;
  try {
    v = decode(data, size, "decode_npz threw something other than IoError");
  } catch (const synk::IoError&) {
    return 0;
  }
  std::set<std::string> names;
  for (const auto& [name, a] : v) {
    if (name.empty() || !names.insert(name).second) violated("empty or repeated name", name);
    if (a.nbytes() != static_cast<size_t>(a.numel()) * 4) violated("array bytes != elements x 4", name);
  }
  std::vector<uint8_t> again;
  try {
    again = synk::encode_npz(v);
  } catch (const std::exception& e) {
    violated("an accepted archive cannot be encoded again", e.what());
  }
  synk::VarValues w;
  try {
    w = decode(again.data(), again.size(), "decoding synk's own encoding threw");
  } catch (const synk::IoError& e) {
    violated("synk's own encoding of an accepted archive is refused", e.what());
  }
  if (w.size() != v.size()) violated("the round trip changed the number of arrays");
  for (size_t i = 0; i < v.size(); ++i)
    if (w[i].first != v[i].first || !same(w[i].second, v[i].second)) violated("the round trip changed", v[i].first);
  // synk's encoding: the last byte before the central directory belongs to
  // the last member's data (or its .npy header); flipping it must be caught.
  if (!v.empty()) {
    const std::string s(again.begin(), again.end());
    const size_t cd = s.rfind(std::string("PK\x01\x02", 4));
    if (cd == std::string::npos || cd == 0) violated("no central directory in synk's own encoding");
    again[cd - 1] ^= 0x01;
    try {
      synk::decode_npz(again.data(), again.size(), "fuzz.npz");
      violated("a flipped byte in a member went unnoticed", v.back().first);
    } catch (const synk::IoError&) {
    }
  }
  return 0;
}
