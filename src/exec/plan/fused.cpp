// exec/plan/fused.cpp — recognising fused programs that have a hand-written
// loop in the CPU executor.
#include "exec/plan/fused.hpp"

#include <cstddef>

namespace synk::plan {

namespace {

// Matches the program against the Nesterov pattern (instruction order as
// the graph builds it; any register assignment).
bool match_nesterov(const EwProgram& p, EwProgram::NesterovSlots& a) {
  if (p.code.size() != 6 || p.outputs.size() != 2) return false;
  const auto& c = p.code;
  auto is = [](const EwInstr& i, BinOp op, EwArg::Kind ka, EwArg::Kind kb) {
    return i.op == EwOp::Binary && i.bop == op && i.a.kind == ka && i.b.kind == kb;
  };
  auto reg = [](const EwArg& x, const EwInstr& src) { return x.kind == EwArg::Reg && x.index == src.dst; };
  if (!is(c[0], BinOp::Mul, EwArg::Full, EwArg::Scalar) || !is(c[1], BinOp::Mul, EwArg::Full, EwArg::Scalar) ||
      !is(c[2], BinOp::Sub, EwArg::Reg, EwArg::Reg) || !is(c[3], BinOp::Mul, EwArg::Reg, EwArg::Scalar) ||
      !is(c[4], BinOp::Sub, EwArg::Reg, EwArg::Reg) || !is(c[5], BinOp::Add, EwArg::Full, EwArg::Reg))
    return false;
  // Registers are reused, so check each read against the latest writer.
  if (!reg(c[2].a, c[1]) || !reg(c[2].b, c[0]) || !reg(c[3].a, c[2]) || !reg(c[4].a, c[3]) ||
      !reg(c[4].b, c[0]) || !reg(c[5].b, c[4]))
    return false;
  if (c[1].dst == c[0].dst || c[2].dst == c[0].dst || c[3].dst == c[0].dst || c[3].dst == c[2].dst ||
      c[4].dst == c[2].dst)
    return false;
  // Stored: v2 (c[2]) and p2 (c[5]), nothing else.
  int v_out = -1, p_out = -1;
  for (size_t j = 0; j < p.outputs.size(); ++j) {
    if (p.out_reg[j] == c[2].dst && v_out < 0) v_out = static_cast<int>(j);
    else if (p.out_reg[j] == c[5].dst && p_out < 0) p_out = static_cast<int>(j);
  }
  if (v_out < 0 || p_out < 0 || c[5].dst == c[2].dst) return false;
  a = {c[0].a.index, c[1].a.index, c[5].a.index, c[0].b.index, c[1].b.index, c[3].b.index, v_out, p_out};
  return true;
}

}  // namespace

void classify(EwProgram& p) {
  EwProgram::NesterovSlots a{};
  p.pattern = match_nesterov(p, a) ? EwProgram::Nesterov : EwProgram::Generic;
  p.nesterov = p.pattern == EwProgram::Nesterov ? a : EwProgram::NesterovSlots{};
}

}  // namespace synk::plan
