// exec/plan/plan.cpp — compiles a FunctionDef for one batch size into a Plan:
// schedule, resolved shapes, kernel geometry and arena offsets.
//
// Nodes are stored in topological order (an op's inputs are earlier nodes),
// so the schedule is the needed nodes in id order; liveness is then one pass
// over it, and a best-fit free list places each value in the arena.
//
// compile() runs its phases in order, each a member of Compiler below:
// mark_needed, fold_bias_relu, resolve_shapes, group_elementwise,
// make_steps, liveness, place_updates, place_outputs, place_values, finish.
#include <algorithm>
#include <iterator>
#include <cstdlib>
#include <limits>
#include <cstring>
#include <map>

#include "exec/plan/plan.hpp"
#include "synk/error.hpp"

namespace synk::plan {

CompileOptions& default_compile_options() {
  static CompileOptions opts = [] {
    CompileOptions o;
    const char* env = std::getenv("SYNK_CPU_NO_REUSE");
    if (env && env[0] == '1') {
      o.reuse = false;
      o.inplace_updates = false;
      o.fuse = false;
    }
    return o;
  }();
  return opts;
}

namespace {

constexpr int64_t kAlign = 64;
constexpr int64_t kForever = std::numeric_limits<int64_t>::max();

int64_t align_up(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// Best-fit allocator over byte offsets; the high-water mark is the arena size.
class BlockAllocator {
 public:
  int64_t alloc(int64_t bytes) {
    bytes = align_up(bytes);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->second >= bytes && (best == free_.end() || it->second < best->second)) best = it;
    if (best != free_.end()) {
      const int64_t off = best->first, size = best->second;
      free_.erase(best);
      if (size > bytes) free_[off + bytes] = size - bytes;
      return off;
    }
    // Grow the arena, starting inside a free block that touches its end.
    if (!free_.empty()) {
      auto last = std::prev(free_.end());
      if (last->first + last->second == top_) {
        const int64_t off = last->first;
        free_.erase(last);
        top_ = off + bytes;
        return off;
      }
    }
    const int64_t off = top_;
    top_ += bytes;
    return off;
  }
  void release(int64_t off, int64_t bytes) {
    bytes = align_up(bytes);
    auto it = free_.emplace(off, bytes).first;
    auto next = std::next(it);
    if (next != free_.end() && it->first + it->second == next->first) {
      it->second += next->second;
      free_.erase(next);
    }
    if (it != free_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        free_.erase(it);
      }
    }
  }
  int64_t top() const { return top_; }

 private:
  std::map<int64_t, int64_t> free_;
  int64_t top_ = 0;
};

// The one mapping from graph ops to the elementwise kernels' op kinds
// (kernels/elementwise.hpp): the family, and the kind in *b or *u. `flag`
// is the node's (Gelu's and GeluGrad's form); the family never depends on it.
Family elementwise_of(Op op, BinOp* b = nullptr, UnOp* u = nullptr, bool flag = false) {
  BinOp bk = BinOp::Add;
  UnOp uk = UnOp::Neg;
  Family fam = Family::Binary;
  switch (op) {
    case Op::Add: bk = BinOp::Add; break;
    case Op::Sub: bk = BinOp::Sub; break;
    case Op::Mul: bk = BinOp::Mul; break;
    case Op::Div: bk = BinOp::Div; break;
    case Op::Equal: bk = BinOp::Equal; break;
    case Op::ReluGrad: bk = BinOp::ReluGrad; break;
    case Op::Maximum: bk = BinOp::Maximum; break;
    case Op::Minimum: bk = BinOp::Minimum; break;
    case Op::Greater: bk = BinOp::Greater; break;
    case Op::Less: bk = BinOp::Less; break;
    case Op::GeluGrad: bk = flag ? BinOp::GeluTanhGrad : BinOp::GeluGrad; break;
    case Op::AbsGrad: bk = BinOp::AbsGrad; break;
    case Op::MaximumGradMask: bk = BinOp::MaximumGradMask; break;
    case Op::Where: return Family::Ternary;
    default: fam = Family::Unary;
  }
  if (fam == Family::Unary) switch (op) {
    case Op::Neg: uk = UnOp::Neg; break;
    case Op::Relu: uk = UnOp::Relu; break;
    case Op::Tanh: uk = UnOp::Tanh; break;
    case Op::Sigmoid: uk = UnOp::Sigmoid; break;
    case Op::Exp: uk = UnOp::Exp; break;
    case Op::Log: uk = UnOp::Log; break;
    case Op::Sqrt: uk = UnOp::Sqrt; break;
    case Op::Square: uk = UnOp::Square; break;
    case Op::PowScalar: uk = UnOp::Pow; break;
    case Op::Gelu: uk = flag ? UnOp::GeluTanh : UnOp::Gelu; break;
    case Op::Abs: uk = UnOp::Abs; break;
    case Op::Sin: uk = UnOp::Sin; break;
    case Op::Cos: uk = UnOp::Cos; break;
    case Op::Clip: uk = UnOp::Clip; break;
    case Op::ClipMask: uk = UnOp::ClipMask; break;
    default: return Family::ByOp;
  }
  if (b) *b = bk;
  if (u) *u = uk;
  return fam;
}

bool is_binary(Op op) { return elementwise_of(op) == Family::Binary; }
bool is_unary(Op op) { return elementwise_of(op) == Family::Unary; }
bool is_ternary(Op op) { return elementwise_of(op) == Family::Ternary; }
// Binary ops with an i32 result whatever their operands' dtype.
bool is_compare(Op op) { return op == Op::Equal || op == Op::Greater || op == Op::Less; }

// The scalar attributes of a unary op's formula (Pow's exponent, Clip's
// bounds), kernels/elementwise.hpp's p and q.
void unary_params(const Node& n, float& p, float& q) {
  p = q = 0.f;
  if (n.op == Op::PowScalar) p = n.floats.empty() ? 1.f : n.floats[0];
  if (n.op == Op::Clip || n.op == Op::ClipMask) {
    p = n.floats.size() > 0 ? n.floats[0] : 0.f;
    q = n.floats.size() > 1 ? n.floats[1] : 0.f;
  }
}

// Ops whose output element i depends only on input elements i (for operands
// of the output's size), so the output may overwrite such an operand.
bool elementwise_inplace_ok(Op op) {
  return is_unary(op) || is_ternary(op) || (is_binary(op) && !is_compare(op));
}

int expected_inputs(Op op) {
  if (is_binary(op)) return 2;
  if (is_ternary(op)) return 3;
  switch (op) {
    case Op::Input: case Op::Variable: case Op::Constant: return 0;
    case Op::MatMul: case Op::SoftmaxCrossEntropy: case Op::Conv2d: case Op::Conv2dGradInput:
    case Op::Conv2dGradWeight: case Op::MaxPool2dGrad: case Op::Embedding: case Op::EmbeddingGrad:
    case Op::BatchMatMul: case Op::BatchNormVar:
      return 2;
    case Op::SoftmaxCrossEntropyGrad: case Op::LayerNormGrad: case Op::BatchNorm: case Op::BatchNormRunningVar:
    case Op::Attention:
      return 3;
    case Op::BatchNormGrad: return 5;
    case Op::BatchNormGradGamma: case Op::BatchNormGradSums: case Op::AttentionGrad: return 4;
    default: return 1;
  }
}

size_t ints_needed(Op op) {
  switch (op) {
    case Op::Argmax: case Op::Softmax: case Op::LogSoftmax: case Op::DropoutMask: case Op::Concat:
    case Op::Attention:
      return 1;
    case Op::MatMul: case Op::BatchMatMul: case Op::AttentionGrad: return 2;
    case Op::Slice: case Op::SliceGrad: return 3;
    case Op::Conv2d: case Op::Conv2dGradInput: case Op::Conv2dGradWeight: return 4;
    case Op::MaxPool2d: case Op::MaxPool2dGrad: case Op::AvgPool2d: case Op::AvgPool2dGrad: return 6;
    default: return 0;
  }
}

size_t floats_needed(Op op) {
  switch (op) {
    case Op::Clip: case Op::ClipMask: return 2;
    case Op::Attention: case Op::AttentionGrad: return 1;
    default: return 0;
  }
}

[[noreturn]] void fail_node(const FunctionDef& def, int32_t id, const Node& n, const std::string& what) {
  throw ShapeError("function '" + def.name + "': cannot compile " + op_name(n.op) + " (node " +
                   std::to_string(id) + "): " + what);
}

// The elementwise instruction a node runs as inside a fused group, if
// any (not the comparisons, whose result is i32, nor where, whose condition
// is: a group holds f32 values only).
bool ew_op(const Node& n, EwInstr& e) {
  if (n.op == Op::DropoutMask) {
    e.op = EwOp::Dropout;
    return true;
  }
  if (is_compare(n.op)) return false;
  switch (elementwise_of(n.op, &e.bop, &e.uop, n.flag)) {
    case Family::Binary: e.op = EwOp::Binary; return true;
    case Family::Unary: e.op = EwOp::Unary; return true;
    case Family::Ternary: case Family::ByOp: break;
  }
  return false;
}

// Members per fused group: bounds registers, inputs and outputs of a
// program below the kEwMax* limits.
constexpr size_t kMaxGroup = 10;
constexpr size_t kMinGroup = 3;
constexpr int64_t kBigGroup = int64_t{1} << 20;  // elements: groups this large fuse from 2 members

ConvGeom conv_geom(const Shape& x, const Shape& w, const Shape& y, const std::vector<int64_t>& ints) {
  ConvGeom g{};
  g.n = x[0]; g.c = x[1]; g.h = x[2]; g.w = x[3];
  g.o = w[0]; g.kh = w[2]; g.kw = w[3];
  g.sh = ints[0]; g.sw = ints[1]; g.ph = ints[2]; g.pw = ints[3];
  g.oh = y[2]; g.ow = y[3];
  return g;
}

PoolGeom pool_geom(const Shape& x, const Shape& y, const std::vector<int64_t>& ints) {
  PoolGeom g{};
  g.n = x[0]; g.c = x[1]; g.h = x[2]; g.w = x[3];
  g.kh = ints[0]; g.kw = ints[1]; g.sh = ints[2]; g.sw = ints[3]; g.ph = ints[4]; g.pw = ints[5];
  g.oh = y[2]; g.ow = y[3];
  return g;
}

// The state the phases of compile() share: the graph, the plan being built
// and the per-node tables one phase leaves for the next.
class Compiler {
 public:
  Compiler(const std::vector<Node>& nodes, const FunctionDef& def, int64_t batch, const CompileOptions& opts)
      : nodes(nodes), def(def), batch(batch), opts(opts), count(static_cast<int32_t>(nodes.size())) {
    p.batch = batch;
    p.shapes.assign(nodes.size(), Shape{});
    p.dtypes.reserve(nodes.size());
    for (const Node& n : nodes) p.dtypes.push_back(n.dtype);
    p.loc.assign(nodes.size(), ValueLoc{});
    p.ptr.assign(nodes.size(), nullptr);
  }

  Plan run() {
    mark_needed();
    fold_bias_relu();
    fold_norm_relu();
    fold_matmul_gelu_grad();
    resolve_shapes();
    group_elementwise();
    make_steps();
    liveness();
    place_updates();
    place_outputs();
    place_values();
    finish();
    return std::move(p);
  }

 private:
  // The nodes the outputs and updates need, checked for well-formedness;
  // each input node's position among the function's inputs.
  void mark_needed();
  // Bias add (+ ReLU) after a conv/matmul folded into its producer.
  void fold_bias_relu();
  void fold_norm_relu();
  // gelu_grad(x, g) with g a batched product read by nothing else: folded
  // into the product (CPU only, CompileOptions::fuse_matmul_gelu_grad).
  void fold_matmul_gelu_grad();
  // Resolved shapes, leaf locations (inputs, variables, constants) and the
  // root each alias (reshape, folded op) shares its storage with.
  void resolve_shapes();
  // Chains of same-size f32 elementwise ops grouped to run as one step.
  void group_elementwise();
  // The program of fused group gi, appended to p.fused.
  void make_program(int32_t gi);
  // One step per needed non-leaf node (or fused group), with its geometry.
  void make_steps();
  // The kernel step of node `id` (not in a fused group): operands, resolved
  // geometry, a folded bias/ReLU; the conv workspace it needs.
  Step kernel_step(int32_t id, const Node& n);
  // The last step reading each root (kForever: outputs and updates).
  void liveness();
  // Updates written straight into their variable where nothing later needs
  // the old value; the others become copies.
  void place_updates();
  // Outputs computed straight into the caller's buffers.
  void place_outputs();
  // Arena offsets by liveness, then the conv workspace.
  void place_values();
  // Aliases take their root's place; the bound node list and outputs.
  void finish();

  void check_id(int32_t id) const {
    if (id < 0 || id >= count)
      throw ArgumentError("function '" + def.name + "': node id " + std::to_string(id) + " out of range");
  }
  const Shape& shape_of(int32_t id) const { return p.shapes[static_cast<size_t>(id)]; }
  int64_t bytes_of(int32_t id) const { return p.bytes(id); }
  // What each step reads and writes: one value for a kernel step, the
  // external inputs and stored members for a fused group.
  void step_ins(const Step& s, std::vector<int32_t>& v) const {
    v.clear();
    if (s.fused >= 0) {
      v = p.fused[static_cast<size_t>(s.fused)].inputs;
      return;
    }
    for (int32_t in : s.in)
      if (in >= 0) v.push_back(in);
    for (size_t i = 3; i < s.parts.size(); ++i) v.push_back(s.parts[i]);
  }
  void step_outs(const Step& s, std::vector<int32_t>& v) const {
    v.clear();
    if (s.fused >= 0) v = p.fused[static_cast<size_t>(s.fused)].outputs;
    else v.push_back(s.node);
  }
  void use(int32_t id, int64_t when) {
    int32_t r = root[static_cast<size_t>(id)];
    last_use[static_cast<size_t>(r)] = std::max(last_use[static_cast<size_t>(r)], when);
  }

  const std::vector<Node>& nodes;
  const FunctionDef& def;
  const int64_t batch;
  const CompileOptions& opts;
  const int32_t count;
  Plan p;
  std::vector<char> needed;
  std::vector<int32_t> input_pos;
  std::vector<int> uses;                     // readers, outputs and updates included
  std::vector<int32_t> reader;               // the last reader
  std::vector<int32_t> fused_bias, alias_of; // producer -> bias node; folded node -> producer
  std::vector<char> fused_relu;
  std::vector<int32_t> fused_gelu_grad;      // product -> the GeluGrad node folded into it
  std::vector<int32_t> root;
  std::vector<int32_t> group_of;
  std::vector<std::vector<int32_t>> groups;
  std::vector<int32_t> program_of;           // group -> index of its program in p.fused
  std::vector<int64_t> step_of;
  int64_t work_floats = 0;
  std::vector<int64_t> last_use;
  std::vector<int32_t> direct;               // value node -> variable it is written into
  std::vector<int32_t> external;             // value node -> output position
};

void Compiler::mark_needed() {
  needed.assign(nodes.size(), 0);
  for (int32_t o : def.outputs) { check_id(o); needed[static_cast<size_t>(o)] = 1; }
  for (auto [var, val] : def.updates) {
    check_id(var);
    check_id(val);
    needed[static_cast<size_t>(val)] = 1;
    needed[static_cast<size_t>(var)] = 1;
  }
  for (int32_t id = count - 1; id >= 0; --id) {
    if (!needed[static_cast<size_t>(id)]) continue;
    const Node& n = nodes[static_cast<size_t>(id)];
    if (static_cast<int>(n.inputs.size()) < expected_inputs(n.op) || n.ints.size() < ints_needed(n.op) ||
        n.floats.size() < floats_needed(n.op))
      fail_node(def, id, n, "malformed node (missing inputs or attributes)");
    for (int32_t in : n.inputs) {
      if (in < 0 || in >= id) fail_node(def, id, n, "input id " + std::to_string(in) + " is not an earlier node");
      needed[static_cast<size_t>(in)] = 1;
    }
  }
  input_pos.assign(nodes.size(), -1);
  for (size_t i = 0; i < def.inputs.size(); ++i) {
    check_id(def.inputs[i]);
    input_pos[static_cast<size_t>(def.inputs[i])] = static_cast<int32_t>(i);
  }
}

void Compiler::fold_bias_relu() {
  // Readers of each needed node (outputs and updates count as readers).
  uses.assign(nodes.size(), 0);
  reader.assign(nodes.size(), -1);
  for (int32_t id = 0; id < count; ++id) {
    if (!needed[static_cast<size_t>(id)]) continue;
    for (int32_t in : nodes[static_cast<size_t>(id)].inputs) {
      uses[static_cast<size_t>(in)]++;
      reader[static_cast<size_t>(in)] = id;
    }
  }
  for (int32_t o : def.outputs) uses[static_cast<size_t>(o)]++;
  for (auto [var, val] : def.updates) uses[static_cast<size_t>(val)]++;
  // producer node -> bias node folded into it; folded nodes alias the producer.
  fused_bias.assign(nodes.size(), -1);
  alias_of.assign(nodes.size(), -1);
  fused_relu.assign(nodes.size(), 0);
  if (opts.fuse) {
    for (int32_t id = 0; id < count; ++id) {
      const Node& a = nodes[static_cast<size_t>(id)];
      if (!needed[static_cast<size_t>(id)] || a.op != Op::Add || a.dtype != DType::f32 || a.inputs.size() != 2) continue;
      for (int k = 0; k < 2; ++k) {
        const int32_t c = a.inputs[static_cast<size_t>(k)], r = a.inputs[static_cast<size_t>(1 - k)];
        const Node& cn = nodes[static_cast<size_t>(c)];
        if ((cn.op != Op::Conv2d && cn.op != Op::MatMul && cn.op != Op::BatchMatMul) || uses[static_cast<size_t>(c)] != 1 ||
            fused_bias[static_cast<size_t>(c)] >= 0 || c == r)
          continue;
        const Node& rn = nodes[static_cast<size_t>(r)];
        if (rn.dtype != DType::f32 || has_batch(rn.shape) || cn.shape != a.shape) continue;
        // The bias must vary along one dim only: channels of [N,O,H,W]
        // (conv), columns of [M,N] (matmul) or of [..., M, N] (batched).
        const size_t nd = cn.shape.size();
        const size_t axis = cn.op == Op::Conv2d ? 1 : nd - 1;
        if (rn.shape.size() > nd || cn.shape.size() < 2) continue;
        bool ok = true;
        for (size_t i = 0; i < rn.shape.size(); ++i) {
          const size_t oi = nd - rn.shape.size() + i;
          if (oi == axis ? rn.shape[i] != cn.shape[oi] : rn.shape[i] != 1) ok = false;
        }
        if (!ok || static_numel(rn.shape) != cn.shape[axis]) continue;
        fused_bias[static_cast<size_t>(c)] = r;
        alias_of[static_cast<size_t>(id)] = c;
        const int32_t u = reader[static_cast<size_t>(id)];
        if (uses[static_cast<size_t>(id)] == 1 && u >= 0 && nodes[static_cast<size_t>(u)].op == Op::Relu) {
          fused_relu[static_cast<size_t>(c)] = 1;
          alias_of[static_cast<size_t>(u)] = c;
        }
        break;
      }
    }
  }
}

void Compiler::fold_norm_relu() {
  // relu(batch_norm(x)): the ReLU runs in the normalising pass (one pass
  // over the activations fewer) when it is the batch norm's only reader;
  // the ReLU aliases the batch norm's buffer, so its gradient (which reads
  // the ReLU's output) is unchanged. CPU only (CompileOptions).
  if (!opts.fuse || !opts.fuse_norm_relu) return;
  for (int32_t id = 0; id < count; ++id) {
    const Node& bn = nodes[static_cast<size_t>(id)];
    if (!needed[static_cast<size_t>(id)] || bn.op != Op::BatchNorm || uses[static_cast<size_t>(id)] != 1 ||
        alias_of[static_cast<size_t>(id)] >= 0)
      continue;
    const int32_t u = reader[static_cast<size_t>(id)];
    if (u < 0 || nodes[static_cast<size_t>(u)].op != Op::Relu) continue;
    fused_relu[static_cast<size_t>(id)] = 1;
    alias_of[static_cast<size_t>(u)] = id;
  }
}

void Compiler::fold_matmul_gelu_grad() {
  // A transformer's MLP backward: the product gives GELU's incoming
  // gradient (dY W2^T over tokens) and only GeluGrad reads it. The step
  // that makes the product applies GELU's gradient to each block of rows
  // while it is in cache, so the product is not written out and read back
  // (the kernel is the GeluGrad op's own loop: same bits). The GeluGrad
  // node aliases the product's buffer.
  fused_gelu_grad.assign(nodes.size(), -1);
  if (!opts.fuse || !opts.fuse_matmul_gelu_grad) return;
  for (int32_t id = 0; id < count; ++id) {
    const Node& gg = nodes[static_cast<size_t>(id)];
    if (!needed[static_cast<size_t>(id)] || gg.op != Op::GeluGrad || gg.dtype != DType::f32 ||
        alias_of[static_cast<size_t>(id)] >= 0 || gg.inputs.size() != 2)
      continue;
    const int32_t x = gg.inputs[0], prod = gg.inputs[1];
    const Node& pn = nodes[static_cast<size_t>(prod)];
    const Node& xn = nodes[static_cast<size_t>(x)];
    if (pn.op != Op::BatchMatMul || pn.dtype != DType::f32 || uses[static_cast<size_t>(prod)] != 1 || x == prod ||
        fused_bias[static_cast<size_t>(prod)] >= 0 || fused_relu[static_cast<size_t>(prod)] ||
        fused_gelu_grad[static_cast<size_t>(prod)] >= 0 || alias_of[static_cast<size_t>(prod)] >= 0)
      continue;
    // Same shapes (symbolically, so equal whatever the batch): no broadcast.
    if (xn.dtype != DType::f32 || xn.shape != gg.shape || pn.shape != gg.shape) continue;
    fused_gelu_grad[static_cast<size_t>(prod)] = id;
    alias_of[static_cast<size_t>(id)] = prod;
  }
}

void Compiler::resolve_shapes() {
  root.assign(nodes.size(), -1);
  for (int32_t id = 0; id < count; ++id) {
    if (!needed[static_cast<size_t>(id)]) continue;
    const Node& n = nodes[static_cast<size_t>(id)];
    if (has_batch(n.shape) && batch < 0)
      fail_node(def, id, n, "shape " + to_string(n.shape) + " has a batch dim but no input sets it");
    p.shapes[static_cast<size_t>(id)] = resolve(n.shape, batch < 0 ? 0 : batch);
    root[static_cast<size_t>(id)] = id;
    if (alias_of[static_cast<size_t>(id)] >= 0) root[static_cast<size_t>(id)] = alias_of[static_cast<size_t>(id)];
    ValueLoc& l = p.loc[static_cast<size_t>(id)];
    switch (n.op) {
      case Op::Input:
        if (input_pos[static_cast<size_t>(id)] < 0)
          throw ArgumentError("function '" + def.name + "' needs input '" + n.name +
                              "', which is not among its inputs");
        l.kind = Loc::Input;
        l.index = input_pos[static_cast<size_t>(id)];
        break;
      case Op::Variable:
        l.kind = Loc::Variable;
        l.index = id;
        break;
      case Op::Constant: {
        l.kind = Loc::Const;
        l.index = static_cast<int32_t>(p.consts.size());
        const float v = n.floats.empty() ? 0.f : n.floats[0];
        uint32_t bits;
        if (n.dtype == DType::i32) {
          int32_t iv = static_cast<int32_t>(v);
          std::memcpy(&bits, &iv, sizeof bits);
        } else {
          std::memcpy(&bits, &v, sizeof bits);
        }
        const int64_t m = std::max<int64_t>(numel(p.shapes[static_cast<size_t>(id)]), 1);
        p.consts.insert(p.consts.end(), static_cast<size_t>(m), bits);
        break;
      }
      case Op::Reshape:
        if (numel(p.shapes[static_cast<size_t>(id)]) != numel(p.shapes[static_cast<size_t>(n.inputs[0])]))
          fail_node(def, id, n, "reshape of " + to_string(p.shapes[static_cast<size_t>(n.inputs[0])]) +
                                    " to " + to_string(p.shapes[static_cast<size_t>(id)]));
        root[static_cast<size_t>(id)] = root[static_cast<size_t>(n.inputs[0])];
        break;
      default:
        break;
    }
  }
}

void Compiler::group_elementwise() {
  // Greedy, in schedule order: an elementwise node joins (and merges) the
  // groups of its operands of the same size. A group runs as one step at its
  // last member, so it may only grow while no node outside it that reads a
  // member would then run before it.
  group_of.assign(nodes.size(), -1);
  groups.clear();
  if (opts.fuse_elementwise) {
    std::vector<std::vector<int32_t>> readers(nodes.size());
    for (int32_t id = 0; id < count; ++id)
      if (needed[static_cast<size_t>(id)])
        for (int32_t in : nodes[static_cast<size_t>(id)].inputs) readers[static_cast<size_t>(in)].push_back(id);
    std::vector<int64_t> gsize;  // elements per group
    auto fusible = [&](int32_t id) {
      const Node& n = nodes[static_cast<size_t>(id)];
      EwInstr e;
      if (!needed[static_cast<size_t>(id)] || alias_of[static_cast<size_t>(id)] >= 0 || n.dtype != DType::f32 ||
          !ew_op(n, e))
        return false;
      const int64_t N = numel(shape_of(id));
      if (N <= 0) return false;
      if (n.op == Op::DropoutMask) return n.ints.size() >= 1;
      for (int32_t in : n.inputs) {
        const int64_t k = numel(shape_of(in));
        if (nodes[static_cast<size_t>(in)].dtype != DType::f32 || (k != N && k != 1)) return false;
      }
      return true;
    };
    auto can_join = [&](const std::vector<int32_t>& gs, int32_t id) {
      size_t members = 1;
      for (int32_t g : gs) members += groups[static_cast<size_t>(g)].size();
      if (members > kMaxGroup) return false;
      for (int32_t g : gs)
        for (int32_t m : groups[static_cast<size_t>(g)])
          for (int32_t r : readers[static_cast<size_t>(m)]) {
            if (r == id) continue;
            const int32_t rg = group_of[static_cast<size_t>(r)];
            if (rg >= 0 && std::find(gs.begin(), gs.end(), rg) != gs.end()) continue;
            // A folded bias add or ReLU runs as part of its producer's step.
            const int32_t at = alias_of[static_cast<size_t>(r)] >= 0 ? alias_of[static_cast<size_t>(r)] : r;
            if (at < id) return false;
          }
      return true;
    };
    for (int32_t id = 0; id < count; ++id) {
      if (!fusible(id)) continue;
      const Node& n = nodes[static_cast<size_t>(id)];
      const int64_t N = numel(shape_of(id));
      std::vector<int32_t> cand;
      if (n.op != Op::DropoutMask)
        for (int32_t in : n.inputs) {
          const int32_t g = group_of[static_cast<size_t>(in)];
          if (g >= 0 && gsize[static_cast<size_t>(g)] == N && std::find(cand.begin(), cand.end(), g) == cand.end())
            cand.push_back(g);
        }
      std::vector<int32_t> chosen;
      if (!cand.empty() && can_join(cand, id)) {
        chosen = cand;
      } else {
        for (int32_t g : cand)
          if (can_join({g}, id)) {
            chosen = {g};
            break;
          }
      }
      if (chosen.empty()) {
        group_of[static_cast<size_t>(id)] = static_cast<int32_t>(groups.size());
        groups.push_back({id});
        gsize.push_back(N);
        continue;
      }
      std::vector<int32_t>& into = groups[static_cast<size_t>(chosen[0])];
      for (size_t k = 1; k < chosen.size(); ++k) {
        std::vector<int32_t>& from = groups[static_cast<size_t>(chosen[k])];
        for (int32_t m : from) group_of[static_cast<size_t>(m)] = chosen[0];
        into.insert(into.end(), from.begin(), from.end());
        from.clear();
      }
      std::sort(into.begin(), into.end());
      into.push_back(id);
      group_of[static_cast<size_t>(id)] = chosen[0];
    }
    // Small groups keep their ops' own kernels: for two ops on data that
    // fits in cache (dropout mask + multiply, multiply + ReluGrad in an MLP)
    // the chunked interpreter measured slightly slower than two plain loops.
    // On activations past the cache (a residual add + ReLU over a batch of
    // feature maps) the pass over memory it saves wins, but only for ops
    // that cost a memory pass and little arithmetic: a GELU, an exp or a
    // tanh has a vector loop of its own that the interpreter does not
    // match (the ViT's GELU and its gradient took 2.7x as long fused).
    auto memory_bound = [&](int32_t id) {
      switch (nodes[static_cast<size_t>(id)].op) {
        case Op::Add: case Op::Sub: case Op::Mul: case Op::Neg: case Op::Relu: case Op::ReluGrad:
        case Op::Square: case Op::Abs: case Op::AbsGrad: case Op::Maximum: case Op::Minimum:
        case Op::MaximumGradMask: case Op::Clip: case Op::ClipMask:
          return true;
        default:
          return false;
      }
    };
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      auto& g = groups[gi];
      if (g.size() < kMinGroup && (gsize[gi] < kBigGroup || !std::all_of(g.begin(), g.end(), memory_bound))) {
        for (int32_t m : g) group_of[static_cast<size_t>(m)] = -1;
        g.clear();
      }
    }
  }
  program_of.assign(groups.size(), -1);
}

void Compiler::make_program(int32_t gi) {
  const std::vector<int32_t>& mem = groups[static_cast<size_t>(gi)];
  EwProgram pr;
  pr.n = numel(p.shapes[static_cast<size_t>(mem.back())]);
  // Reads of each member inside the group; a member is stored when
  // something outside (a step, an output, an update) reads it too.
  std::vector<int> inside(mem.size(), 0);
  std::vector<size_t> last_read(mem.size(), 0);
  auto slot = [&](int32_t id) -> int {
    auto it = std::find(mem.begin(), mem.end(), id);
    return it == mem.end() ? -1 : static_cast<int>(it - mem.begin());
  };
  for (size_t k = 0; k < mem.size(); ++k)
    for (int32_t in : nodes[static_cast<size_t>(mem[k])].inputs) {
      const int sl = slot(in);
      if (sl < 0) continue;
      inside[static_cast<size_t>(sl)]++;
      last_read[static_cast<size_t>(sl)] = k;
    }
  std::vector<char> stored(mem.size(), 0);
  for (size_t k = 0; k < mem.size(); ++k)
    stored[k] = uses[static_cast<size_t>(mem[k])] > inside[k];
  std::vector<int16_t> reg(mem.size(), -1);
  std::vector<char> busy(kEwMaxRegs, 0);
  for (size_t k = 0; k < mem.size(); ++k) {
    const Node& n = nodes[static_cast<size_t>(mem[k])];
    EwInstr ins;
    ew_op(n, ins);
    auto arg = [&](int32_t in) {
      EwArg a;
      const int sl = slot(in);
      if (sl >= 0) {
        a.kind = EwArg::Reg;
        a.index = reg[static_cast<size_t>(sl)];
        return a;
      }
      auto it = std::find(pr.inputs.begin(), pr.inputs.end(), in);
      if (it == pr.inputs.end()) it = pr.inputs.insert(pr.inputs.end(), in);
      a.index = static_cast<int16_t>(it - pr.inputs.begin());
      a.kind = numel(p.shapes[static_cast<size_t>(in)]) == pr.n ? EwArg::Full : EwArg::Scalar;
      return a;
    };
    if (n.op == Op::DropoutMask) {
      ins.f = n.floats.empty() ? 0.f : n.floats[0];
      ins.key = static_cast<int16_t>(pr.streams.size());
      pr.streams.push_back(n.ints[0]);
    } else {
      ins.a = arg(n.inputs[0]);
      if (n.inputs.size() > 1 && ins.op == EwOp::Binary) ins.b = arg(n.inputs[1]);
      unary_params(n, ins.f, ins.f2);
    }
    // The result gets a register no operand holds, then operands read for
    // the last time free theirs.
    int16_t r = 0;
    while (busy[static_cast<size_t>(r)]) ++r;
    busy[static_cast<size_t>(r)] = 1;
    reg[k] = r;
    ins.dst = r;
    pr.nregs = std::max(pr.nregs, r + 1);
    for (int32_t in : n.op == Op::DropoutMask ? std::vector<int32_t>{} : n.inputs) {
      const int sl = slot(in);
      if (sl >= 0 && !stored[static_cast<size_t>(sl)] && last_read[static_cast<size_t>(sl)] == k)
        busy[static_cast<size_t>(reg[static_cast<size_t>(sl)])] = 0;
    }
    pr.code.push_back(ins);
  }
  for (size_t k = 0; k < mem.size(); ++k)
    if (stored[k]) {
      pr.outputs.push_back(mem[k]);
      pr.out_reg.push_back(reg[k]);
    }
  classify(pr);
  program_of[static_cast<size_t>(gi)] = static_cast<int32_t>(p.fused.size());
  p.fused.push_back(std::move(pr));
}

Step Compiler::kernel_step(int32_t id, const Node& n) {
  Step s;
  s.op = n.op;
  s.node = id;
  for (size_t i = 0; i < n.inputs.size() && i < std::size(s.in); ++i) s.in[i] = n.inputs[i];
  s.dtype = n.dtype;
  s.in_dtype = nodes[static_cast<size_t>(n.inputs[0])].dtype;
  const Shape& out = shape_of(id);
  s.n = numel(out);
  const Shape& x = shape_of(n.inputs[0]);
  // Elementwise ops run their family's kernel with their kind (s.bop /
  // s.uop); the others their own.
  s.family = elementwise_of(n.op, &s.bop, &s.uop, n.flag);
  if (s.family == Family::Unary) unary_params(n, s.f, s.f2);
  try {
    if (s.family == Family::ByOp) switch (n.op) {
      case Op::Sum: case Op::Mean: case Op::Max:
        s.rop = n.op == Op::Sum ? ReduceKind::Sum : n.op == Op::Mean ? ReduceKind::Mean : ReduceKind::Max;
        for (int64_t a : n.ints)
          if (a < 0 || a >= static_cast<int64_t>(x.size())) fail_node(def, id, n, "axis " + std::to_string(a) + " out of range");
        s.red = make_reduce(x, n.ints);
        if (s.red.out_numel != s.n) fail_node(def, id, n, "output shape " + to_string(out) + " does not match the reduction of " + to_string(x));
        break;
      case Op::Argmax: case Op::Softmax: case Op::LogSoftmax: {
        int64_t axis = n.ints[0];
        if (axis < 0) axis += static_cast<int64_t>(x.size());
        if (axis < 0 || axis >= static_cast<int64_t>(x.size())) fail_node(def, id, n, "axis out of range for " + to_string(x));
        s.ax = make_axis(x, axis);
        break;
      }
      case Op::Transpose:
        if (n.ints.size() != x.size()) fail_node(def, id, n, "permutation does not match " + to_string(x));
        s.st = make_transpose(x, n.ints);
        break;
      case Op::BroadcastTo:
        s.st = make_broadcast(out, x, nullptr);
        // flag: the gradient of mean, divided by the broadcast factor.
        s.f = n.flag && s.n > 0 ? static_cast<float>(static_cast<double>(numel(x)) / static_cast<double>(s.n)) : 1.f;
        if (n.flag && n.dtype != DType::f32) fail_node(def, id, n, "averaging broadcast needs f32");
        break;
      case Op::MatMul: {
        const Shape& b = shape_of(n.inputs[1]);
        if (x.size() != 2 || b.size() != 2 || out.size() != 2) fail_node(def, id, n, "operands must be 2-D");
        s.ta = n.ints[0] != 0;
        s.tb = n.ints[1] != 0;
        s.mm_m = s.ta ? x[1] : x[0];
        s.mm_k = s.ta ? x[0] : x[1];
        s.mm_n = s.tb ? b[0] : b[1];
        if ((s.tb ? b[1] : b[0]) != s.mm_k || out[0] != s.mm_m || out[1] != s.mm_n)
          fail_node(def, id, n, "shapes " + to_string(x) + " x " + to_string(b) + " -> " + to_string(out));
        break;
      }
      case Op::SoftmaxCrossEntropy: case Op::SoftmaxCrossEntropyGrad:
        if (x.size() != 2) fail_node(def, id, n, "logits must be [N, C], got " + to_string(x));
        s.mm_m = x[0];
        s.mm_n = x[1];
        break;
      case Op::Conv2d: case Op::Conv2dGradInput: case Op::Conv2dGradWeight: {
        const Shape& b = shape_of(n.inputs[1]);
        const Shape& xs = n.op == Op::Conv2dGradInput ? out : x;
        const Shape& ws = n.op == Op::Conv2d ? b : n.op == Op::Conv2dGradInput ? b : out;
        const Shape& ys = n.op == Op::Conv2d ? out : n.op == Op::Conv2dGradInput ? x : b;
        if (xs.size() != 4 || ws.size() != 4 || ys.size() != 4) fail_node(def, id, n, "operands must be 4-D");
        s.conv = conv_geom(xs, ws, ys, n.ints);
        if (s.conv.sh <= 0 || s.conv.sw <= 0) fail_node(def, id, n, "stride must be positive");
        work_floats = std::max(work_floats, s.conv.workspace());
        break;
      }
      case Op::MaxPool2d: case Op::MaxPool2dGrad: {
        const Shape& ys = n.op == Op::MaxPool2d ? out : shape_of(n.inputs[1]);
        if (x.size() != 4 || ys.size() != 4) fail_node(def, id, n, "operands must be 4-D");
        s.pool = pool_geom(x, ys, n.ints);
        if (s.pool.sh <= 0 || s.pool.sw <= 0) fail_node(def, id, n, "stride must be positive");
        break;
      }
      case Op::RankSum:
        if (out != x || n.dtype != DType::f32 || s.in_dtype != DType::f32)
          fail_node(def, id, n, "needs an f32 operand of the result's shape");
        break;
      case Op::AvgPool2d: case Op::AvgPool2dGrad: {
        // The gradient's node has x's shape and reads the pooled gradient.
        const Shape& xs = n.op == Op::AvgPool2d ? x : out;
        const Shape& ys = n.op == Op::AvgPool2d ? out : x;
        if (xs.size() != 4 || ys.size() != 4) fail_node(def, id, n, "operands must be 4-D");
        s.pool = pool_geom(xs, ys, n.ints);
        if (s.pool.sh <= 0 || s.pool.sw <= 0 || s.pool.kh <= 0 || s.pool.kw <= 0)
          fail_node(def, id, n, "window and stride must be positive");
        break;
      }
      case Op::LayerNorm: case Op::LayerNormGrad: {
        if (x.empty()) fail_node(def, id, n, "input must have at least 1 dim");
        s.ax.n = x.back();
        s.ax.outer = s.ax.n > 0 ? numel(x) / s.ax.n : 0;
        s.ax.inner = 1;
        s.f = n.floats.empty() ? 1e-5f : n.floats[0];
        if (n.op == Op::LayerNorm && n.inputs.size() != 1 && n.inputs.size() != 3)
          fail_node(def, id, n, "takes x, or x, gamma and beta");
        for (size_t i = 1; i < n.inputs.size(); ++i)
          if (i != 2 || n.op == Op::LayerNorm)
            if (numel(shape_of(n.inputs[i])) != s.ax.n) fail_node(def, id, n, "gamma/beta must have the last dim's size");
        break;
      }
      case Op::BatchNormVar: case Op::BatchNorm: case Op::BatchNormGrad: case Op::BatchNormRunningVar:
      case Op::BatchNormGradGamma: case Op::BatchNormGradSums: {
        const Shape& xs = n.op == Op::BatchNormRunningVar ? shape_of(n.inputs[2]) : x;
        if (xs.size() < 2) fail_node(def, id, n, "input must be [N, C, ...]");
        s.ax.outer = xs[0];
        s.ax.n = xs[1];
        s.ax.inner = 1;
        for (size_t i = 2; i < xs.size(); ++i) s.ax.inner *= xs[i];
        s.f = n.floats.empty() ? 0.f : n.floats[0];
        s.training = n.flag;
        if (n.op == Op::BatchNorm && n.inputs.size() != 3 && n.inputs.size() != 5)
          fail_node(def, id, n, "takes x, mean and var, then gamma and beta");
        const size_t vecs = n.op == Op::BatchNormGrad ? 4 : n.op == Op::BatchNormRunningVar ? 2
                            : n.op == Op::BatchNormGradGamma || n.op == Op::BatchNormGradSums ? 3 : n.inputs.size();
        if (n.op == Op::BatchNormGrad && n.inputs.size() > 5 &&
            (!n.flag || numel(shape_of(n.inputs[5])) != 2 * s.ax.n))
          fail_node(def, id, n, "sums must be BatchNormGradSums' [2, C] and only in training");
        for (size_t i = n.op == Op::BatchNormRunningVar ? 0 : 1; i < vecs; ++i)
          if (numel(shape_of(n.inputs[i])) != s.ax.n) fail_node(def, id, n, "per-channel operands must have C elements");
        if (n.op == Op::BatchNormRunningVar && s.ax.outer * s.ax.inner <= 1)
          fail_node(def, id, n, "batch_norm in training needs more than 1 value per channel, got input " +
                                    to_string(xs));
        break;
      }
      case Op::DropoutMask:
        s.f = n.floats.empty() ? 0.f : n.floats[0];
        s.stream = n.ints[0];
        break;
      case Op::Cast:
        break;
      case Op::Concat: {
        const int64_t axis = n.ints[0];
        if (axis < 0 || axis >= static_cast<int64_t>(out.size())) fail_node(def, id, n, "axis out of range for " + to_string(out));
        const AxisGeom ag = make_axis(out, axis);
        s.slice.outer = ag.outer;
        s.slice.n = ag.n;
        s.slice.inner = ag.inner;
        s.parts = n.inputs;
        s.part_at.push_back(0);
        for (int32_t in : n.inputs) {
          const Shape& xs = shape_of(in);
          bool ok = xs.size() == out.size() && nodes[static_cast<size_t>(in)].dtype == n.dtype;
          for (size_t i = 0; ok && i < xs.size(); ++i) ok = static_cast<int64_t>(i) == axis || xs[i] == out[i];
          if (!ok) fail_node(def, id, n, "operand " + to_string(xs) + " does not fit " + to_string(out));
          s.part_at.push_back(s.part_at.back() + xs[static_cast<size_t>(axis)]);
        }
        if (s.part_at.back() != ag.n) fail_node(def, id, n, "operands do not add up to " + to_string(out));
        break;
      }
      case Op::Slice: case Op::SliceGrad: {
        // x: the whole tensor (Slice's input, SliceGrad's output).
        const Shape& whole = n.op == Op::Slice ? x : out;
        const Shape& part = n.op == Op::Slice ? out : x;
        const int64_t axis = n.ints[0];
        if (axis < 0 || axis >= static_cast<int64_t>(whole.size())) fail_node(def, id, n, "axis out of range for " + to_string(whole));
        const AxisGeom ag = make_axis(whole, axis);
        s.slice = SliceGeom{ag.outer, ag.n, ag.inner, n.ints[1], n.ints[2]};
        Shape want = whole;
        want[static_cast<size_t>(axis)] = n.ints[2] - n.ints[1];
        if (n.ints[1] < 0 || n.ints[2] < n.ints[1] || n.ints[2] > ag.n || want != part)
          fail_node(def, id, n, "range [" + std::to_string(n.ints[1]) + ", " + std::to_string(n.ints[2]) + ") of " +
                                    to_string(whole) + " does not give " + to_string(part));
        break;
      }
      case Op::Embedding: case Op::EmbeddingGrad: {
        // mm_m index rows, mm_n = D, mm_k = V.
        const Shape& table = n.op == Op::Embedding ? x : out;
        const Shape& rows = n.op == Op::Embedding ? out : x;
        const Shape& idx = shape_of(n.inputs[1]);
        if (table.size() != 2 || nodes[static_cast<size_t>(n.inputs[1])].dtype != DType::i32)
          fail_node(def, id, n, "needs a [V, D] table and i32 indices");
        Shape want = idx;
        want.push_back(table[1]);
        if (want != rows) fail_node(def, id, n, "indices " + to_string(idx) + " and table " + to_string(table) + " do not give " + to_string(rows));
        s.mm_m = numel(idx);
        s.mm_n = table[1];
        s.mm_k = table[0];
        break;
      }
      case Op::Attention: case Op::AttentionGrad:
        s.attn_which = n.op == Op::AttentionGrad ? static_cast<int>(n.ints[1]) : 0;
        s.attn = make_attention(x, shape_of(n.inputs[1]), shape_of(n.inputs[2]),
                                n.op == Op::AttentionGrad ? &shape_of(n.inputs[3]) : nullptr, out, n.ints[0],
                                n.op == Op::AttentionGrad ? n.ints[1] : -1, n.floats[0]);
        work_floats = std::max(work_floats, s.attn.workspace());
        break;
      case Op::BatchMatMul:
        s.bmm = make_batch_matmul(x, shape_of(n.inputs[1]), out, n.ints[0] != 0, n.ints[1] != 0);
        s.ta = s.bmm.ta;
        s.tb = s.bmm.tb;
        break;
      default:
        fail_node(def, id, n, "op not supported by the CPU executor");
    }
    if (is_binary(n.op)) s.st = make_broadcast(out, x, &shape_of(n.inputs[1]));
    if (is_ternary(n.op)) s.st = make_broadcast(out, x, &shape_of(n.inputs[1]), &shape_of(n.inputs[2]));
    auto dtype_of = [&](size_t i) { return nodes[static_cast<size_t>(n.inputs[i])].dtype; };
    if ((is_binary(n.op) || is_unary(n.op)) && !is_compare(n.op) && s.in_dtype != s.dtype)
      fail_node(def, id, n, "operand dtype differs from the result dtype");
    if (is_binary(n.op) && dtype_of(1) != s.in_dtype) fail_node(def, id, n, "operand dtypes differ");
    if (is_compare(n.op) && s.dtype != DType::i32) fail_node(def, id, n, "a comparison's result must be i32");
    if (is_binary(n.op) && s.in_dtype == DType::i32 && !ew::binary_has_i32(s.bop))
      fail_node(def, id, n, "needs f32 operands");
    if (is_ternary(n.op) && (s.in_dtype != DType::i32 || dtype_of(1) != s.dtype || dtype_of(2) != s.dtype))
      fail_node(def, id, n, "needs an i32 condition and two operands of the result's dtype");
    if ((n.op == Op::MatMul || n.op == Op::BatchMatMul) &&
        (n.dtype != DType::f32 || s.in_dtype != DType::f32 || dtype_of(1) != DType::f32))
      fail_node(def, id, n, "matmul supports f32 only");
    if ((n.op == Op::Slice || n.op == Op::SliceGrad || n.op == Op::Concat) &&
        (dtype_size(n.dtype) != 4 || s.in_dtype != n.dtype))
      fail_node(def, id, n, "needs 4-byte operands of the result's dtype");
    if ((n.op == Op::Embedding || n.op == Op::EmbeddingGrad) && (n.dtype != DType::f32 || s.in_dtype != DType::f32))
      fail_node(def, id, n, "needs an f32 table");
  } catch (const ShapeError& e) {
    if (std::string(e.what()).rfind("function '", 0) == 0) throw;
    fail_node(def, id, n, e.what());
  }
  if (fused_bias[static_cast<size_t>(id)] >= 0) s.in[2] = fused_bias[static_cast<size_t>(id)];
  s.relu = fused_relu[static_cast<size_t>(id)] != 0;
  if (const int32_t gg = fused_gelu_grad[static_cast<size_t>(id)]; gg >= 0) {
    const Node& gn = nodes[static_cast<size_t>(gg)];
    s.gelu_grad = true;
    s.in[3] = gn.inputs[0];
    s.bop = gn.flag ? BinOp::GeluTanhGrad : BinOp::GeluGrad;
  }
  return s;
}

void Compiler::make_steps() {
  step_of.assign(nodes.size(), -1);
  work_floats = 0;
  for (int32_t id = 0; id < count; ++id) {
    if (!needed[static_cast<size_t>(id)]) continue;
    const Node& n = nodes[static_cast<size_t>(id)];
    if (n.op == Op::Input || n.op == Op::Variable || n.op == Op::Constant || n.op == Op::Reshape) continue;
    if (alias_of[static_cast<size_t>(id)] >= 0) continue;  // folded into its producer
    if (n.op >= Op::kCount) fail_node(def, id, n, "unknown op");
    if (const int32_t gi = group_of[static_cast<size_t>(id)]; gi >= 0) {
      // A fused group runs where its last member would.
      if (groups[static_cast<size_t>(gi)].back() != id) continue;
      make_program(gi);
      Step s;
      s.op = n.op;
      s.node = id;
      s.n = numel(shape_of(id));
      s.fused = program_of[static_cast<size_t>(gi)];
      for (int32_t o : p.fused[static_cast<size_t>(s.fused)].outputs) step_of[static_cast<size_t>(o)] = static_cast<int64_t>(p.steps.size());
      p.steps.push_back(s);
      continue;
    }
    const Step s = kernel_step(id, n);
    step_of[static_cast<size_t>(id)] = static_cast<int64_t>(p.steps.size());
    p.steps.push_back(s);
  }
}

void Compiler::liveness() {
  std::vector<int32_t> ins;
  const int64_t nsteps = static_cast<int64_t>(p.steps.size());
  last_use.assign(nodes.size(), -1);
  for (int64_t si = 0; si < nsteps; ++si) {
    step_ins(p.steps[static_cast<size_t>(si)], ins);
    for (int32_t in : ins) use(in, si);
  }
  for (int32_t o : def.outputs) use(o, kForever);
  for (auto [var, val] : def.updates) use(val, kForever);
}

void Compiler::place_updates() {
  std::vector<int32_t> ins;
  // value node -> variable it is written into
  direct.assign(nodes.size(), -1);
  if (opts.inplace_updates) {
    std::vector<int> value_uses(nodes.size(), 0);
    for (auto [var, val] : def.updates) value_uses[static_cast<size_t>(val)]++;
    std::vector<int> var_updates(nodes.size(), 0);
    for (auto [var, val] : def.updates) var_updates[static_cast<size_t>(var)]++;
    for (auto [var, val] : def.updates) {
      const int64_t si = step_of[static_cast<size_t>(val)];
      if (si < 0 || value_uses[static_cast<size_t>(val)] != 1 || var_updates[static_cast<size_t>(var)] != 1) continue;
      if (root[static_cast<size_t>(val)] != val) continue;
      const int64_t var_last = last_use[static_cast<size_t>(var)];
      if (var_last == kForever) continue;
      bool ok = var_last < si;
      if (var_last == si) {
        // The step that makes the new value is the old value's last reader:
        // fine for elementwise ops reading the variable at full size (a
        // fused group reads each chunk before storing it).
        const Step& s = p.steps[static_cast<size_t>(si)];
        ok = s.fused >= 0 || elementwise_inplace_ok(s.op);
        step_ins(s, ins);
        for (int32_t in : ins)
          if (root[static_cast<size_t>(in)] == var && numel(shape_of(in)) != s.n) ok = false;
      }
      if (!ok) continue;
      direct[static_cast<size_t>(val)] = var;
    }
  }
  for (auto [var, val] : def.updates) {
    if (direct[static_cast<size_t>(val)] == var || val == var) continue;
    p.copies.push_back({var, val});
  }
}

void Compiler::place_outputs() {
  // value node -> output position, for outputs computed by a step whose
  // value nothing else (another output, an update) shares.
  external.assign(nodes.size(), -1);
  if (opts.outputs_external) {
    std::vector<int> claims(nodes.size(), 0);
    for (int32_t o : def.outputs) claims[static_cast<size_t>(root[static_cast<size_t>(o)])]++;
    for (auto [var, val] : def.updates) claims[static_cast<size_t>(root[static_cast<size_t>(val)])] += 2;
    for (size_t k = 0; k < def.outputs.size(); ++k) {
      const int32_t r = root[static_cast<size_t>(def.outputs[k])];
      if (step_of[static_cast<size_t>(r)] < 0 || direct[static_cast<size_t>(r)] >= 0 || claims[static_cast<size_t>(r)] != 1)
        continue;
      external[static_cast<size_t>(r)] = static_cast<int32_t>(k);
    }
  }
}

void Compiler::place_values() {
  std::vector<int32_t> ins, outs;
  const int64_t nsteps = static_cast<int64_t>(p.steps.size());
  BlockAllocator arena;
  std::vector<char> owns(nodes.size(), 0);  // holds an arena block of its own
  for (int64_t si = 0; si < nsteps; ++si) {
    const Step& s = p.steps[static_cast<size_t>(si)];
    step_ins(s, ins);
    step_outs(s, outs);
    for (int32_t id : outs) {
      ValueLoc& l = p.loc[static_cast<size_t>(id)];
      if (direct[static_cast<size_t>(id)] >= 0) {
        l.kind = Loc::Variable;
        l.index = direct[static_cast<size_t>(id)];
      } else if (external[static_cast<size_t>(id)] >= 0) {
        l.kind = Loc::Output;
        l.index = external[static_cast<size_t>(id)];
      } else {
        l.kind = Loc::Arena;
        const int64_t bytes = bytes_of(id);
        bool placed = false;
        if (opts.reuse && (s.fused >= 0 || elementwise_inplace_ok(s.op))) {
          // Take over the block of an operand that dies here.
          for (int32_t in : ins) {
            if (in != root[static_cast<size_t>(in)]) continue;
            if (!owns[static_cast<size_t>(in)] || last_use[static_cast<size_t>(in)] != si) continue;
            if (bytes_of(in) != bytes) continue;
            l.offset = p.loc[static_cast<size_t>(in)].offset;
            owns[static_cast<size_t>(in)] = 0;
            owns[static_cast<size_t>(id)] = 1;
            placed = true;
            break;
          }
        }
        if (!placed && bytes > 0) {
          l.offset = arena.alloc(bytes);
          owns[static_cast<size_t>(id)] = 1;
        }
      }
    }
    if (!opts.reuse) continue;
    auto maybe_free = [&](int32_t r) {
      if (r < 0 || !owns[static_cast<size_t>(r)]) return;
      if (std::max(last_use[static_cast<size_t>(r)], step_of[static_cast<size_t>(r)]) != si) return;
      arena.release(p.loc[static_cast<size_t>(r)].offset, bytes_of(r));
      owns[static_cast<size_t>(r)] = 0;
    };
    for (int32_t in : ins) maybe_free(root[static_cast<size_t>(in)]);
    for (int32_t id : outs) maybe_free(id);  // computed but never read
  }
  p.work_offset = align_up(arena.top());
  p.arena_bytes = p.work_offset + align_up(work_floats * static_cast<int64_t>(sizeof(float)));
}

void Compiler::finish() {
  // Aliases take their root's place.
  for (int32_t id = 0; id < count; ++id) {
    if (!needed[static_cast<size_t>(id)]) continue;
    const int32_t r = root[static_cast<size_t>(id)];
    if (r != id) p.loc[static_cast<size_t>(id)] = p.loc[static_cast<size_t>(r)];
    p.bound.push_back(id);
  }
  p.outputs = def.outputs;
}

}  // namespace

std::vector<int64_t> stage_updates(const Plan& q, const std::vector<Node>& nodes, int64_t& top, int64_t align) {
  std::vector<char> target(nodes.size(), 0);
  for (const Plan::UpdateCopy& c : q.copies) target[static_cast<size_t>(c.var)] = 1;
  std::vector<int64_t> stage(q.copies.size(), -1);
  for (size_t i = 0; i < q.copies.size(); ++i) {
    const ValueLoc& l = q.loc[static_cast<size_t>(q.copies[i].value)];
    if (l.kind == Loc::Variable && target[static_cast<size_t>(l.index)]) {
      stage[i] = top;
      const int64_t end = top + static_cast<int64_t>(variable_bytes(nodes, q.copies[i].var));
      top = (end + align - 1) / align * align;
    }
  }
  return stage;
}

std::vector<int64_t> output_last_steps(const Plan& p) {
  // Two values share memory when both are in the caller's output buffer k,
  // or their arena byte ranges intersect.
  auto shares = [&](int32_t a, int32_t b) {
    const ValueLoc &x = p.loc[static_cast<size_t>(a)], &y = p.loc[static_cast<size_t>(b)];
    if (x.kind != y.kind) return false;
    if (x.kind == Loc::Output) return x.index == y.index;
    if (x.kind != Loc::Arena) return false;
    const int64_t xb = p.bytes(a), yb = p.bytes(b);
    return xb > 0 && yb > 0 && x.offset < y.offset + yb && y.offset < x.offset + xb;
  };
  std::vector<int64_t> last(p.outputs.size(), -1);
  auto touch = [&](int32_t id, size_t si) {
    if (id < 0) return;
    for (size_t k = 0; k < p.outputs.size(); ++k)
      if (shares(id, p.outputs[k])) last[k] = static_cast<int64_t>(si);
  };
  for (size_t si = 0; si < p.steps.size(); ++si) {
    const Step& s = p.steps[si];
    touch(s.node, si);
    for (int32_t in : s.in) touch(in, si);
    for (int32_t in : s.parts) touch(in, si);
    if (s.fused >= 0) {
      const EwProgram& f = p.fused[static_cast<size_t>(s.fused)];
      for (int32_t id : f.inputs) touch(id, si);
      for (int32_t id : f.outputs) touch(id, si);
    }
  }
  return last;
}

Plan compile(const std::vector<Node>& nodes, const FunctionDef& def, int64_t batch,
             const CompileOptions& opts) {
  return Compiler(nodes, def, batch, opts).run();
}

}  // namespace synk::plan
