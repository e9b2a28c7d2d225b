// exec/plan/fused.hpp — fused elementwise groups: a chain of same-size f32
// elementwise ops that the planner compiles into one small program, run as
// one pass by the CPU executor (exec/cpu/kernels_fused.cpp).
//
// The data goes through in chunks small enough for L1, each op a plain loop
// over a chunk "register". Per element, every op computes exactly what its
// own kernel would, in the same order, so results are bit-identical to
// running the ops one by one.
#pragma once

#include <cstdint>
#include <vector>

#include "elementwise.hpp"  // kernels/: BinOp, UnOp

namespace synk::plan {

// An instruction's family; binary and unary ones compute their kind's
// formula (kernels/elementwise.hpp), as the unfused kernels do.
enum class EwOp : uint8_t {
  Binary,   // bop (a, b)
  Unary,    // uop (a; f, f2 = its scalar attributes: Pow's exponent, Clip's bounds)
  Dropout,  // mask (f = p, key slot)
};
struct EwArg {
  enum Kind : uint8_t { None, Reg, Full, Scalar } kind = None;
  int16_t index = 0;  // register, or external input slot
};
struct EwInstr {
  EwOp op = EwOp::Binary;
  BinOp bop = BinOp::Add;
  UnOp uop = UnOp::Neg;
  EwArg a, b;
  int16_t dst = 0;    // register
  int16_t key = -1;   // Dropout: slot in the program's dropout streams
  float f = 0.f, f2 = 0.f;
};
struct EwProgram {
  int64_t n = 0;                  // elements of every full-size operand and result
  int nregs = 0;
  std::vector<EwInstr> code;
  std::vector<int32_t> inputs;    // node ids, by input slot
  std::vector<int32_t> outputs;   // node ids stored to memory
  std::vector<int16_t> out_reg;   // register holding each output
  std::vector<int64_t> streams;   // dropout streams, by key slot
  // Programs with a hand-written loop (set by classify).
  enum Pattern : uint8_t { Generic, Nesterov } pattern = Generic;
  // Nesterov: the input and output slots of its operands (the graph may
  // hold mu twice).
  struct NesterovSlots {
    int g, v, p, lr, mu, mu2, v_out, p_out;
  } nesterov{};
};
// Recognises the patterns that have their own loop; the planner calls it
// once per program.
void classify(EwProgram& p);
inline constexpr int kEwMaxRegs = 12;
inline constexpr int kEwMaxInputs = 32;
inline constexpr int kEwMaxOutputs = 16;
inline constexpr int kEwMaxKeys = 16;

}  // namespace synk::plan
