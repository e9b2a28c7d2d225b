// Reverse-mode differentiation: walks the graph backwards from a scalar loss
// and appends, for each op on a path to a requested tensor, the nodes that
// compute its input gradients. The result is plain graph nodes, so gradients
// compile, fuse and serialise like everything else.
#include "synk/autodiff.hpp"

#include <algorithm>
#include <unordered_set>

#include "graph/internal.hpp"
#include "synk/error.hpp"
#include "synk/ops.hpp"

namespace synk {

namespace {

// Sums (or averages) g down to `shape`, undoing numpy broadcasting.
// Shapes are taken by value: appending nodes may move the graph's storage.
Tensor unbroadcast(Tensor g, const Shape shape, bool average = false) {
  const Shape gs = g.shape();
  if (gs == shape) return g;
  const size_t lead = gs.size() - shape.size();
  std::vector<int> axes;
  for (size_t i = 0; i < gs.size(); ++i)
    if (i < lead || (shape[i - lead] == 1 && gs[i] != 1)) axes.push_back(static_cast<int>(i));
  Tensor r = axes.empty() ? g : (average ? mean(g, axes, true) : sum(g, axes, true));
  return reshape(r, shape);
}

// g of a reduction's output, brought back to the input's shape.
Tensor expand_reduced(Tensor g, const Node& red, const Shape in_shape, bool average) {
  Shape keep = in_shape;
  for (int64_t a : red.ints) keep[static_cast<size_t>(a)] = 1;
  Tensor k = reshape(g, keep);
  if (keep == in_shape) return k;
  return make_node(g.graph(), Op::BroadcastTo, g.dtype(), in_shape, {k.id()}, {}, {}, average);
}

std::vector<int> inverse_perm(const std::vector<int64_t>& p) {
  std::vector<int> inv(p.size());
  for (size_t i = 0; i < p.size(); ++i) inv[static_cast<size_t>(p[i])] = static_cast<int>(i);
  return inv;
}

}  // namespace

std::vector<Tensor> grad(Tensor loss, const std::vector<Tensor>& wrt) {
  if (!loss.valid()) throw ArgumentError("grad: empty loss tensor");
  Graph& g = loss.graph();
  if (loss.dtype() != DType::f32 || has_batch(loss.shape()) || numel(loss.shape()) != 1)
    throw ShapeError("grad: loss must be a scalar f32 tensor, got " + std::string(dtype_name(loss.dtype())) +
                     " " + to_string(loss.shape()));
  for (const Tensor& w : wrt) {
    if (!w.valid() || &w.graph() != &g) throw ArgumentError("grad: a wrt tensor is empty or from another graph");
    if (w.dtype() != DType::f32) throw TypeError("grad: cannot differentiate with respect to an i32 tensor");
  }

  const int32_t top = loss.id();
  // Which nodes depend on some wrt tensor through differentiable ops.
  std::vector<char> dep(static_cast<size_t>(top) + 1, 0);
  for (const Tensor& w : wrt)
    if (w.id() <= top) dep[static_cast<size_t>(w.id())] = 1;
  for (int32_t id = 0; id <= top; ++id) {
    const Node& n = g.node(id);
    if (n.dtype != DType::f32 || n.op == Op::DropoutMask || n.op == Op::Cast) continue;
    for (int32_t in : n.inputs) dep[static_cast<size_t>(id)] |= dep[static_cast<size_t>(in)];
  }

  std::vector<Tensor> gr(static_cast<size_t>(top) + 1);
  auto accumulate = [&](int32_t id, Tensor d) {
    if (!dep[static_cast<size_t>(id)]) return;
    Tensor& slot = gr[static_cast<size_t>(id)];
    slot = slot.valid() ? add(slot, d) : d;
  };
  gr[static_cast<size_t>(top)] = loss.shape().empty()
                                     ? g.constant(1.f)
                                     : broadcast_to(g.constant(1.f), loss.shape());

  // Nodes are in topological order (inputs have smaller ids), so one
  // backward sweep sees each node after all its consumers.
  for (int32_t id = top; id >= 0; --id) {
    if (!dep[static_cast<size_t>(id)] || !gr[static_cast<size_t>(id)].valid()) continue;
    const Node n = g.node(id);  // copy: appending nodes may reallocate
    Tensor dy = gr[static_cast<size_t>(id)];
    Tensor y = g.tensor(id);
    auto in = [&](size_t i) { return g.tensor(n.inputs[i]); };
    auto wants = [&](size_t i) { return dep[static_cast<size_t>(n.inputs[i])] != 0; };
    switch (n.op) {
      case Op::Input: case Op::Variable: case Op::Constant:
        break;
      case Op::Add:
        if (wants(0)) accumulate(n.inputs[0], unbroadcast(dy, in(0).shape()));
        if (wants(1)) accumulate(n.inputs[1], unbroadcast(dy, in(1).shape()));
        break;
      case Op::Sub:
        if (wants(0)) accumulate(n.inputs[0], unbroadcast(dy, in(0).shape()));
        if (wants(1)) accumulate(n.inputs[1], unbroadcast(neg(dy), in(1).shape()));
        break;
      case Op::Mul:
        if (wants(0)) accumulate(n.inputs[0], unbroadcast(dy * in(1), in(0).shape()));
        if (wants(1)) accumulate(n.inputs[1], unbroadcast(dy * in(0), in(1).shape()));
        break;
      case Op::Div:
        if (wants(0)) accumulate(n.inputs[0], unbroadcast(dy / in(1), in(0).shape()));
        if (wants(1)) accumulate(n.inputs[1], unbroadcast(neg(dy * y / in(1)), in(1).shape()));
        break;
      case Op::Neg: accumulate(n.inputs[0], neg(dy)); break;
      case Op::Relu: accumulate(n.inputs[0], relu_grad(y, dy)); break;
      case Op::Tanh: accumulate(n.inputs[0], dy * (1.f - square(y))); break;
      case Op::Sigmoid: accumulate(n.inputs[0], dy * (y * (1.f - y))); break;
      case Op::Exp: accumulate(n.inputs[0], dy * y); break;
      case Op::Log: accumulate(n.inputs[0], dy / in(0)); break;
      case Op::Sqrt: accumulate(n.inputs[0], dy / (y * 2.f)); break;
      case Op::Square: accumulate(n.inputs[0], dy * (in(0) * 2.f)); break;
      case Op::PowScalar: {
        const float p = n.floats.at(0);
        accumulate(n.inputs[0], dy * (pow(in(0), p - 1.f) * p));
        break;
      }
      case Op::ReluGrad:  // d/dg of g * (y > 0); y is treated as constant
        if (wants(1)) accumulate(n.inputs[1], relu_grad(in(0), dy));
        break;
      case Op::Gelu: accumulate(n.inputs[0], gelu_grad(in(0), dy, n.flag)); break;
      case Op::Abs: accumulate(n.inputs[0], abs_grad(in(0), dy)); break;
      case Op::AbsGrad:  // d/dg of g * sign(x); sign is flat almost everywhere
        if (wants(1)) accumulate(n.inputs[1], abs_grad(in(0), dy));
        break;
      case Op::Sin: accumulate(n.inputs[0], dy * synk::cos(in(0))); break;
      case Op::Cos: accumulate(n.inputs[0], neg(dy * synk::sin(in(0)))); break;
      case Op::Clip: {
        const float lo = n.floats.at(0), hi = n.floats.at(1);
        accumulate(n.inputs[0], dy * clip_mask(in(0), lo, hi));
        break;
      }
      case Op::Maximum: case Op::Minimum: {
        // x's share is maximum_grad_mask(x, y) for maximum and (y, x) for
        // minimum; the other operand's share is the same mask swapped.
        Tensor a = in(0), b = in(1);
        const bool mx = n.op == Op::Maximum;
        if (wants(0))
          accumulate(n.inputs[0], unbroadcast(dy * (mx ? maximum_grad_mask(a, b) : maximum_grad_mask(b, a)), a.shape()));
        if (wants(1))
          accumulate(n.inputs[1], unbroadcast(dy * (mx ? maximum_grad_mask(b, a) : maximum_grad_mask(a, b)), b.shape()));
        break;
      }
      case Op::Where: {
        Tensor zero = g.constant(0.f);
        if (wants(1)) accumulate(n.inputs[1], unbroadcast(where(in(0), dy, zero), in(1).shape()));
        if (wants(2)) accumulate(n.inputs[2], unbroadcast(where(in(0), zero, dy), in(2).shape()));
        break;
      }
      case Op::ClipMask: case Op::MaximumGradMask:
        break;  // piecewise constant: zero gradient
      case Op::Sum: accumulate(n.inputs[0], expand_reduced(dy, n, in(0).shape(), false)); break;
      case Op::Mean: accumulate(n.inputs[0], expand_reduced(dy, n, in(0).shape(), true)); break;
      case Op::Max: {
        // Ties share the gradient of each one (every maximal element gets it).
        Tensor x = in(0);
        Tensor ymax = expand_reduced(y, n, x.shape(), false);
        Tensor mask = cast(equal(x, ymax), DType::f32);
        accumulate(n.inputs[0], mask * expand_reduced(dy, n, x.shape(), false));
        break;
      }
      case Op::Reshape: accumulate(n.inputs[0], reshape(dy, in(0).shape())); break;
      case Op::Transpose: accumulate(n.inputs[0], transpose(dy, inverse_perm(n.ints))); break;
      case Op::BroadcastTo: accumulate(n.inputs[0], unbroadcast(dy, in(0).shape(), n.flag)); break;
      case Op::MatMul: {
        const bool ta = n.ints.at(0) != 0, tb = n.ints.at(1) != 0;
        Tensor a = in(0), b = in(1);
        if (wants(0)) {
          Tensor da = !ta ? matmul(dy, b, false, !tb) : matmul(b, dy, tb, true);
          accumulate(n.inputs[0], da);
        }
        if (wants(1)) {
          Tensor db = !tb ? matmul(a, dy, !ta, false) : matmul(dy, a, true, ta);
          accumulate(n.inputs[1], db);
        }
        break;
      }
      case Op::BatchMatMul: {
        // The 2-D rules, each product summed down to its operand's batch
        // dims (those it was broadcast along).
        const bool ta = n.ints.at(0) != 0, tb = n.ints.at(1) != 0;
        Tensor a = in(0), b = in(1);
        auto lead = [](const Shape& s) { return Shape(s.begin(), s.end() - 2); };
        if (wants(0)) {
          const Shape to = lead(a.shape());
          accumulate(n.inputs[0], !ta ? batch_matmul_to(dy, b, false, !tb, to) : batch_matmul_to(b, dy, tb, true, to));
        }
        if (wants(1)) {
          const Shape to = lead(b.shape());
          accumulate(n.inputs[1], !tb ? batch_matmul_to(a, dy, !ta, false, to) : batch_matmul_to(dy, a, true, ta, to));
        }
        break;
      }
      case Op::Concat: {
        const int ax = static_cast<int>(n.ints.at(0));
        int64_t at = 0;
        for (size_t i = 0; i < n.inputs.size(); ++i) {
          const int64_t len = in(i).shape()[static_cast<size_t>(ax)];
          if (wants(i)) accumulate(n.inputs[i], slice(dy, ax, at, at + len));
          at += len;
        }
        break;
      }
      case Op::Slice:
        accumulate(n.inputs[0], slice_grad(dy, in(0).shape(), static_cast<int>(n.ints.at(0)), n.ints.at(1), n.ints.at(2)));
        break;
      case Op::SliceGrad:
        accumulate(n.inputs[0], slice(dy, static_cast<int>(n.ints.at(0)), n.ints.at(1), n.ints.at(2)));
        break;
      case Op::Embedding:
        if (wants(0)) accumulate(n.inputs[0], embedding_grad(dy, in(1), in(0).shape()));
        break;
      case Op::EmbeddingGrad:  // linear in g: the rows of dy at the indices
        if (wants(0)) accumulate(n.inputs[0], embedding(dy, in(1)));
        break;
      case Op::Softmax: {
        const int ax = static_cast<int>(n.ints.at(0));
        accumulate(n.inputs[0], y * (dy - sum(dy * y, {ax}, true)));
        break;
      }
      case Op::LogSoftmax: {
        const int ax = static_cast<int>(n.ints.at(0));
        accumulate(n.inputs[0], dy - exp(y) * sum(dy, {ax}, true));
        break;
      }
      case Op::SoftmaxCrossEntropy:
        if (wants(0))
          accumulate(n.inputs[0], make_node(g, Op::SoftmaxCrossEntropyGrad, DType::f32, in(0).shape(),
                                            {n.inputs[0], n.inputs[1], dy.id()}));
        break;
      case Op::Conv2d:
        if (wants(0))
          accumulate(n.inputs[0], make_node(g, Op::Conv2dGradInput, DType::f32, in(0).shape(),
                                            {dy.id(), n.inputs[1]}, n.ints));
        if (wants(1))
          accumulate(n.inputs[1], make_node(g, Op::Conv2dGradWeight, DType::f32, in(1).shape(),
                                            {n.inputs[0], dy.id()}, n.ints));
        break;
      case Op::MaxPool2d:
        accumulate(n.inputs[0], make_node(g, Op::MaxPool2dGrad, DType::f32, in(0).shape(),
                                          {n.inputs[0], dy.id()}, n.ints));
        break;
      case Op::AvgPool2d:
        accumulate(n.inputs[0], make_node(g, Op::AvgPool2dGrad, DType::f32, in(0).shape(), {dy.id()}, n.ints));
        break;
      case Op::LayerNorm: {
        // dx by the fused op (through the row statistics); dgamma, dbeta as
        // reductions over the leading axes of dy * xhat and dy.
        Tensor x = in(0);
        const int nd = x.ndim();
        const Dim d = x.shape().back();
        std::vector<int> lead;
        for (int i = 0; i + 1 < nd; ++i) lead.push_back(i);
        auto over_lead = [&](Tensor t) { return lead.empty() ? t : sum(t, lead); };
        const bool affine = n.inputs.size() >= 3;
        Tensor gamma = affine ? in(1) : broadcast_to(g.constant(1.f), {d});
        if (wants(0))
          accumulate(n.inputs[0], make_node(g, Op::LayerNormGrad, DType::f32, x.shape(),
                                            {x.id(), gamma.id(), dy.id()}, {}, n.floats));
        if (affine && wants(1)) {
          Tensor xhat = make_node(g, Op::LayerNorm, DType::f32, x.shape(), {x.id()}, {}, n.floats);
          accumulate(n.inputs[1], over_lead(dy * xhat));
        }
        if (affine && wants(2)) accumulate(n.inputs[2], over_lead(dy));
        break;
      }
      case Op::BatchNorm: {
        // dx by the fused op; the statistics (inputs 1, 2) get nothing: in
        // training the op's formula already carries x's gradient through
        // them, in evaluation they are running statistics (not trained).
        Tensor x = in(0);
        std::vector<int> axes{0};
        for (int i = 2; i < x.ndim(); ++i) axes.push_back(i);
        const bool affine = n.inputs.size() >= 5;
        Tensor gamma = affine ? in(3) : broadcast_to(g.constant(1.f), {x.shape()[1]});
        if (n.flag) {
          // Training: one pass over x and dy sums dy and dy * xhat per
          // channel; they are beta's and gamma's gradients and the terms dx
          // needs, so dx's pass reads x and dy once more, not twice.
          const Dim c = x.shape()[1];
          Tensor sums = make_node(g, Op::BatchNormGradSums, DType::f32, {2, c},
                                  {x.id(), n.inputs[1], n.inputs[2], dy.id()}, {}, n.floats);
          if (wants(0))
            accumulate(n.inputs[0], make_node(g, Op::BatchNormGrad, DType::f32, x.shape(),
                                              {x.id(), n.inputs[1], n.inputs[2], gamma.id(), dy.id(), sums.id()},
                                              {}, n.floats, true));
          if (affine && wants(3)) accumulate(n.inputs[3], reshape(slice(sums, 0, 1, 2), {c}));
          if (affine && wants(4)) accumulate(n.inputs[4], reshape(slice(sums, 0, 0, 1), {c}));
          break;
        }
        if (wants(0))
          accumulate(n.inputs[0], make_node(g, Op::BatchNormGrad, DType::f32, x.shape(),
                                            {x.id(), n.inputs[1], n.inputs[2], gamma.id(), dy.id()}, {}, n.floats,
                                            n.flag));
        // dgamma in one pass over x and dy (no xhat, no product in memory).
        if (affine && wants(3))
          accumulate(n.inputs[3], make_node(g, Op::BatchNormGradGamma, DType::f32, in(3).shape(),
                                            {x.id(), n.inputs[1], n.inputs[2], dy.id()}, {}, n.floats));
        if (affine && wants(4)) accumulate(n.inputs[4], sum(dy, axes));
        break;
      }
      case Op::RankSum:  // y = sum over ranks of x: every rank's loss reads each rank's x
        accumulate(n.inputs[0], rank_sum(dy));
        break;
      case Op::Attention: {
        // One kernel per (batch, head) recomputes the scores and gives the
        // gradients of q, k and v together; as one node when all three are
        // wanted and of one shape (self-attention), else one node each.
        const int64_t layout = n.ints.at(0);
        const Shape qs = in(0).shape();
        if (wants(0) && wants(1) && wants(2) && in(1).shape() == qs && in(2).shape() == qs) {
          Shape stacked{3};
          stacked.insert(stacked.end(), qs.begin(), qs.end());
          Tensor all = make_node(g, Op::AttentionGrad, DType::f32, stacked,
                                 {n.inputs[0], n.inputs[1], n.inputs[2], dy.id()}, {layout, 3}, n.floats);
          for (int i = 0; i < 3; ++i)
            accumulate(n.inputs[static_cast<size_t>(i)], reshape(slice(all, 0, i, i + 1), qs));
          break;
        }
        for (size_t i = 0; i < 3; ++i)
          if (wants(i))
            accumulate(n.inputs[i], make_node(g, Op::AttentionGrad, DType::f32, in(i).shape(),
                                              {n.inputs[0], n.inputs[1], n.inputs[2], dy.id()},
                                              {layout, static_cast<int64_t>(i)}, n.floats));
        break;
      }
      default:
        throw ArgumentError(std::string("grad: no gradient rule for op '") + op_name(n.op) +
                            "' (node " + std::to_string(id) + ")");
    }
  }

  std::vector<Tensor> out;
  out.reserve(wrt.size());
  for (const Tensor& w : wrt) {
    Tensor d = w.id() <= top ? gr[static_cast<size_t>(w.id())] : Tensor();
    out.push_back(d.valid() ? d : broadcast_to(g.constant(0.f), w.shape()));
  }
  return out;
}

}  // namespace synk
