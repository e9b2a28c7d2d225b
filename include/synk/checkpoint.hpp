// synk/checkpoint.hpp — shared variables (parameters and optimizer state)
// saved to and loaded from one file that numpy and PyTorch read without synk.
//
// The file is NumPy's .npz: a ZIP archive holding one .npy array per
// variable, named after it ("l1/W" is the member "l1/W.npy"), uncompressed,
// exactly what np.savez writes. np.load("ck.npz")["l1/W"] reads a
// variable with numpy alone; torch.from_numpy(...) makes it a tensor. Why
// .npz and not .safetensors: numpy reads it with no extra package (and
// writes it, so weights made elsewhere load into synk), while .safetensors
// needs the safetensors package or a hand-written reader.
//
//   synk::save_checkpoint("ck.npz", rt);   // the master's values (rt.snapshot())
//   synk::load_checkpoint("ck.npz", rt);   // every rank gets them
//   synk::save_checkpoint("ck.npz", session);
//   synk::load_checkpoint("ck.npz", session);
//   synk::VarValues v = synk::read_npz("ck.npz");   // every array, file order
//
// What is saved: every shared variable of the target, by name — the model's
// parameters and the optimizer's state variables (e.g. "<param>/velocity";
// Adam's "<param>/m", "<param>/v" and its step count "<first param>/t"), so
// training resumes where it stopped. A Runtime saves the master's copy, which is every rank's
// after a training step (and the whole state of the last completed step on a
// failed runtime); loading sets every rank, so a checkpoint made with N ranks
// loads with M ranks, or into a Session. Not saved: dropout and shuffling
// streams (they restart from the seed) and anything outside the graph.
//
// Writes are atomic: the file is written to "<path>.tmp-<pid>-<n>" in the
// same folder, flushed to disk (fsync), then renamed over `path`; a crash
// mid-write leaves the previous checkpoint intact (and at worst that
// temporary file, which nothing reads). A write that fails removes its
// temporary file and throws IoError naming the file. A `path` that is a
// named pipe, a socket, a device or a directory is refused with IoError
// before anything is written (renaming over it would delete it).
//
// Loading reads and checks the whole file before changing anything: a
// truncated, corrupted (every member's CRC-32 is checked) or unsupported file
// throws IoError naming the file and, where it is known, the variable; a
// variable the target does not have, or one whose dtype or shape differs,
// throws ArgumentError, TypeError or ShapeError naming both. In each case no
// variable is changed. A variable of the target missing from the file is an
// error too, unless LoadOptions::partial is set (then it keeps its value).
// Only regular files are read: a named pipe, a socket, a device or a
// directory is refused at once with IoError naming the file and its kind
// (never an open() that waits for a pipe's writer).
//
// Readable: .npy versions 1.0 to 3.0 with dtype little-endian float32 ('<f4')
// or int32 ('<i4') in C order; members stored (np.savez) or deflated
// (np.savez_compressed); ZIP64 (numpy always writes its local headers so).
// Anything else (float64, Fortran order, pickled objects, encryption) is
// refused with a message that says what to convert to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "synk/runtime.hpp"

namespace synk {

class Session;
class CudaSession;

// ---- the format: names and arrays to .npz and back -------------------------------
// Names must be unique, non-empty and free of NUL bytes; arrays f32 or i32.
// Atomic (see above). Throws ArgumentError for bad names, IoError on a
// failed write.
void write_npz(const std::string& path, const VarValues& values);
// Every array of the file, in file order. Throws IoError (see above).
VarValues read_npz(const std::string& path);
// The same in memory: the bytes write_npz would write, and the reader over
// a buffer (`label` names it in error messages, e.g. a file name).
std::vector<uint8_t> encode_npz(const VarValues& values);
VarValues decode_npz(const uint8_t* data, size_t size, const std::string& label = "<memory>");

// ---- checkpoints of a session or runtime -------------------------------------------
struct LoadOptions {
  // Variables of the target that the file lacks keep their values (e.g.
  // parameters saved without optimizer state). Default: an error, like
  // PyTorch's load_state_dict(strict=True). Unknown names in the file are
  // always an error.
  bool partial = false;
};

// Every variable of the session's graph, in graph order.
void save_checkpoint(const std::string& path, const Session& s);
void save_checkpoint(const std::string& path, const CudaSession& s);
// The master's values (Runtime::snapshot): works on a failed runtime too;
// refused (ArgumentError) before distribute(), when there is nothing to save.
void save_checkpoint(const std::string& path, const Runtime& rt);

void load_checkpoint(const std::string& path, Session& s, const LoadOptions& opts = {});
void load_checkpoint(const std::string& path, CudaSession& s, const LoadOptions& opts = {});
// Every rank's copy (Runtime::restore); needs distribute() first.
void load_checkpoint(const std::string& path, Runtime& rt, const LoadOptions& opts = {});

}  // namespace synk
