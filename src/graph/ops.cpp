// Op constructors: each checks operand dtypes and shapes, infers the result
// shape (symbolic batch included) and appends one node. Errors name the op
// and the shapes involved, so mistakes surface where the graph is built.
#include "synk/ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "exec/plan/geometry.hpp"
#include "graph/internal.hpp"
#include "synk/error.hpp"

namespace synk {

namespace {

std::string shp(const Tensor& t) { return to_string(t.shape()); }

Graph& same_graph(const char* op, const Tensor& a, const Tensor& b) {
  if (!a.valid() || !b.valid()) throw ArgumentError(std::string(op) + ": empty tensor operand");
  if (&a.graph() != &b.graph()) throw ArgumentError(std::string(op) + ": operands belong to different graphs");
  return a.graph();
}

void need_f32(const char* op, const Tensor& t) {
  if (t.dtype() != DType::f32)
    throw TypeError(std::string(op) + ": expects f32, got " + dtype_name(t.dtype()) + " tensor of shape " + shp(t));
}

void need_ndim(const char* op, const Tensor& t, int n, const char* what) {
  if (t.ndim() != n)
    throw ShapeError(std::string(op) + ": " + what + " must have " + std::to_string(n) + " dims, got " + shp(t));
}

// Dims that must agree (batch agrees only with batch).
bool dims_match(Dim a, Dim b) { return a == b; }

// The CPU and CUDA kernels iterate over at most plan::kMaxDims dims once
// adjacent dims that step alike are merged. `loop_dims` is that count for
// the op's shapes with `batch` taken as 2 (the count of every batch size
// but 1, where it can only be smaller), so a graph that needs more is
// refused here, when it is built, not when a function is compiled.
void check_loop_dims(const char* op, int loop_dims, const std::string& what, const char* merge_rule) {
  if (loop_dims > plan::kMaxDims)
    throw ShapeError(std::string(op) + ": " + what + " needs " + std::to_string(loop_dims) +
                     " loop dims after merging adjacent dims that " + merge_rule + "; synk's kernels run at most " +
                     std::to_string(plan::kMaxDims) + " (reshape to fewer dims first)");
}

constexpr int64_t kCheckBatch = 2;  // `batch` in the loop-dim checks

int norm_axis(const char* op, int axis, int ndim) {
  int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim)
    throw ShapeError(std::string(op) + ": axis " + std::to_string(axis) + " out of range for " +
                     std::to_string(ndim) + "-d tensor");
  return a;
}

}  // namespace

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape r(n);
  for (size_t i = 0; i < n; ++i) {
    Dim da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    Dim db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da == db) r[i] = da;
    else if (da == 1) r[i] = db;
    else if (db == 1) r[i] = da;
    else
      throw ShapeError(std::string(op) + ": cannot broadcast " + to_string(a) + " with " + to_string(b));
  }
  return r;
}

Tensor make_node(Graph& g, Op op, DType dt, Shape shape, std::vector<int32_t> inputs,
                 std::vector<int64_t> ints, std::vector<float> floats, bool flag) {
  Node n;
  n.op = op;
  n.dtype = dt;
  n.shape = std::move(shape);
  n.inputs = std::move(inputs);
  n.ints = std::move(ints);
  n.floats = std::move(floats);
  n.flag = flag;
  return g.add_node(std::move(n));
}

// ---- elementwise -------------------------------------------------------------

// f32_only: the op has f32 kernels only (the gradient helpers); the others
// take f32 and i32.
static Tensor binary(Op op, Tensor a, Tensor b, bool f32_only = false, bool flag = false) {
  const char* name = op_name(op);
  Graph& g = same_graph(name, a, b);
  if (a.dtype() != b.dtype())
    throw TypeError(std::string(name) + ": dtypes differ: " + dtype_name(a.dtype()) + " " + shp(a) +
                    " and " + dtype_name(b.dtype()) + " " + shp(b));
  if (f32_only) need_f32(name, a);
  Shape s = broadcast_shapes(name, a.shape(), b.shape());
  {
    const Shape ra = resolve(a.shape(), kCheckBatch), rb = resolve(b.shape(), kCheckBatch);
    check_loop_dims(name, plan::broadcast_dims(resolve(s, kCheckBatch), ra, &rb),
                    "broadcasting " + shp(a) + " with " + shp(b), "both operands broadcast alike");
  }
  const bool compare = op == Op::Equal || op == Op::Greater || op == Op::Less;
  DType dt = compare ? DType::i32 : a.dtype();
  return make_node(g, op, dt, std::move(s), {a.id(), b.id()}, {}, {}, flag);
}

Tensor add(Tensor a, Tensor b) { return binary(Op::Add, a, b); }
Tensor sub(Tensor a, Tensor b) { return binary(Op::Sub, a, b); }
Tensor mul(Tensor a, Tensor b) { return binary(Op::Mul, a, b); }
Tensor div(Tensor a, Tensor b) { return binary(Op::Div, a, b); }
Tensor equal(Tensor a, Tensor b) { return binary(Op::Equal, a, b); }
Tensor maximum(Tensor a, Tensor b) { return binary(Op::Maximum, a, b); }
Tensor minimum(Tensor a, Tensor b) { return binary(Op::Minimum, a, b); }
Tensor greater(Tensor a, Tensor b) { return binary(Op::Greater, a, b); }
Tensor less(Tensor a, Tensor b) { return binary(Op::Less, a, b); }

Tensor gelu_grad(Tensor x, Tensor g, bool tanh_approx) {
  if (x.valid() && g.valid() && x.shape() != g.shape())
    throw ShapeError("gelu_grad: shapes differ: " + shp(x) + " vs " + shp(g));
  return binary(Op::GeluGrad, x, g, true, tanh_approx);
}
Tensor abs_grad(Tensor x, Tensor g) {
  if (x.valid() && g.valid() && x.shape() != g.shape())
    throw ShapeError("abs_grad: shapes differ: " + shp(x) + " vs " + shp(g));
  return binary(Op::AbsGrad, x, g, true);
}
Tensor maximum_grad_mask(Tensor x, Tensor y) { return binary(Op::MaximumGradMask, x, y, true); }

Tensor where(Tensor cond, Tensor a, Tensor b) {
  Graph& g = same_graph("where", a, b);
  same_graph("where", cond, a);
  if (cond.dtype() != DType::i32)
    throw TypeError("where: the condition must be i32 (nonzero = true), got " + std::string(dtype_name(cond.dtype())) +
                    " " + shp(cond) + "; greater(), less() and equal() make one");
  if (a.dtype() != b.dtype())
    throw TypeError("where: dtypes differ: " + std::string(dtype_name(a.dtype())) + " " + shp(a) + " and " +
                    dtype_name(b.dtype()) + " " + shp(b));
  const Shape s = broadcast_shapes("where", broadcast_shapes("where", cond.shape(), a.shape()), b.shape());
  {
    const Shape rc = resolve(cond.shape(), kCheckBatch), ra = resolve(a.shape(), kCheckBatch),
                rb = resolve(b.shape(), kCheckBatch);
    check_loop_dims("where", plan::broadcast_dims(resolve(s, kCheckBatch), rc, &ra, &rb),
                    "broadcasting " + shp(cond) + ", " + shp(a) + " and " + shp(b), "all operands broadcast alike");
  }
  return make_node(g, Op::Where, a.dtype(), s, {cond.id(), a.id(), b.id()});
}

// A float scalar as a constant of t's dtype. For an i32 tensor only a whole
// number in i32's range is exact; anything else would be truncated, so it
// is refused (TypeError naming the op, the scalar and the tensor).
static Tensor scalar_like(Op op, const Tensor& t, float v) {
  if (!t.valid()) throw ArgumentError(std::string(op_name(op)) + ": empty tensor operand");
  if (t.dtype() == DType::i32 && !exact_i32(v)) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", static_cast<double>(v));
    throw TypeError(std::string(op_name(op)) + ": the float scalar " + text + " would be truncated to an i32 " +
                    "constant for the i32 tensor " + shp(t) + "; use a whole number, or cast the tensor to f32 " +
                    "first");
  }
  return t.graph().constant(v, t.dtype());
}

Tensor operator+(Tensor a, Tensor b) { return add(a, b); }
Tensor operator-(Tensor a, Tensor b) { return sub(a, b); }
Tensor operator*(Tensor a, Tensor b) { return mul(a, b); }
Tensor operator/(Tensor a, Tensor b) { return div(a, b); }
Tensor operator-(Tensor a) { return neg(a); }
Tensor operator+(Tensor a, float b) { return add(a, scalar_like(Op::Add, a, b)); }
Tensor operator-(Tensor a, float b) { return sub(a, scalar_like(Op::Sub, a, b)); }
Tensor operator*(Tensor a, float b) { return mul(a, scalar_like(Op::Mul, a, b)); }
Tensor operator/(Tensor a, float b) { return div(a, scalar_like(Op::Div, a, b)); }
Tensor operator+(float a, Tensor b) { return add(scalar_like(Op::Add, b, a), b); }
Tensor operator-(float a, Tensor b) { return sub(scalar_like(Op::Sub, b, a), b); }
Tensor operator*(float a, Tensor b) { return mul(scalar_like(Op::Mul, b, a), b); }
Tensor operator/(float a, Tensor b) { return div(scalar_like(Op::Div, b, a), b); }
Tensor maximum(Tensor a, float b) { return maximum(a, scalar_like(Op::Maximum, a, b)); }
Tensor maximum(float a, Tensor b) { return maximum(scalar_like(Op::Maximum, b, a), b); }
Tensor minimum(Tensor a, float b) { return minimum(a, scalar_like(Op::Minimum, a, b)); }
Tensor minimum(float a, Tensor b) { return minimum(scalar_like(Op::Minimum, b, a), b); }
Tensor greater(Tensor a, float b) { return greater(a, scalar_like(Op::Greater, a, b)); }
Tensor greater(float a, Tensor b) { return greater(scalar_like(Op::Greater, b, a), b); }
Tensor less(Tensor a, float b) { return less(a, scalar_like(Op::Less, a, b)); }
Tensor less(float a, Tensor b) { return less(scalar_like(Op::Less, b, a), b); }

static Tensor unary(Op op, Tensor x, bool any_dtype = false, std::vector<float> floats = {}, bool flag = false) {
  if (!x.valid()) throw ArgumentError(std::string(op_name(op)) + ": empty tensor operand");
  if (!any_dtype) need_f32(op_name(op), x);
  return make_node(x.graph(), op, x.dtype(), x.shape(), {x.id()}, {}, std::move(floats), flag);
}

// neg takes f32 and i32; every other unary op has f32 kernels only.
Tensor neg(Tensor x) { return unary(Op::Neg, x, true); }
Tensor relu(Tensor x) { return unary(Op::Relu, x); }
Tensor tanh(Tensor x) { return unary(Op::Tanh, x); }
Tensor sigmoid(Tensor x) { return unary(Op::Sigmoid, x); }
Tensor exp(Tensor x) { return unary(Op::Exp, x); }
Tensor log(Tensor x) { return unary(Op::Log, x); }
Tensor sqrt(Tensor x) { return unary(Op::Sqrt, x); }
Tensor square(Tensor x) { return unary(Op::Square, x); }
Tensor pow(Tensor x, float p) { return unary(Op::PowScalar, x, false, {p}); }
Tensor gelu(Tensor x, bool tanh_approx) { return unary(Op::Gelu, x, false, {}, tanh_approx); }
Tensor abs(Tensor x) { return unary(Op::Abs, x); }
Tensor sin(Tensor x) { return unary(Op::Sin, x); }
Tensor cos(Tensor x) { return unary(Op::Cos, x); }

// Bounds as text for clip's errors.
static std::string float_text(float v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", static_cast<double>(v));
  return text;
}

Tensor clip(Tensor x, float lo, float hi) {
  if (std::isnan(lo) || std::isnan(hi) || lo > hi)
    throw ArgumentError("clip: need lo <= hi, got lo = " + float_text(lo) + ", hi = " + float_text(hi) +
                        (x.valid() ? " for " + shp(x) : std::string()));
  return unary(Op::Clip, x, false, {lo, hi});
}

Tensor clip_mask(Tensor x, float lo, float hi) { return unary(Op::ClipMask, x, false, {lo, hi}); }

Tensor cast(Tensor x, DType to) {
  if (!x.valid()) throw ArgumentError("cast: empty tensor operand");
  if (x.dtype() == to) return x;
  return make_node(x.graph(), Op::Cast, to, x.shape(), {x.id()});
}

Tensor relu_grad(Tensor y, Tensor g) {
  Graph& gr = same_graph("relu_grad", y, g);
  if (y.shape() != g.shape()) throw ShapeError("relu_grad: shapes differ: " + shp(y) + " vs " + shp(g));
  return make_node(gr, Op::ReluGrad, g.dtype(), g.shape(), {y.id(), g.id()});
}

// ---- reductions ----------------------------------------------------------------

static Tensor reduce(Op op, Tensor x, std::vector<int> axes, bool keepdims) {
  const char* name = op_name(op);
  if (!x.valid()) throw ArgumentError(std::string(name) + ": empty tensor operand");
  if (op == Op::Mean) need_f32(name, x);
  const int nd = x.ndim();
  std::vector<int64_t> ax;
  if (axes.empty())
    for (int i = 0; i < nd; ++i) ax.push_back(i);
  for (int a : axes) ax.push_back(norm_axis(name, a, nd));
  std::sort(ax.begin(), ax.end());
  if (std::adjacent_find(ax.begin(), ax.end()) != ax.end())
    throw ShapeError(std::string(name) + ": repeated axis for tensor of shape " + shp(x));
  Shape s;
  for (int i = 0; i < nd; ++i) {
    bool r = std::binary_search(ax.begin(), ax.end(), i);
    if (!r) s.push_back(x.shape()[i]);
    else if (keepdims) s.push_back(1);
  }
  check_loop_dims(name, plan::reduce_dims(resolve(x.shape(), kCheckBatch), ax),
                  "reducing " + shp(x) + " over axes " + to_string(ax), "are all reduced or all kept");
  return make_node(x.graph(), op, x.dtype(), std::move(s), {x.id()}, std::move(ax), {}, keepdims);
}

Tensor sum(Tensor x, std::vector<int> axes, bool keepdims) { return reduce(Op::Sum, x, std::move(axes), keepdims); }
Tensor mean(Tensor x, std::vector<int> axes, bool keepdims) { return reduce(Op::Mean, x, std::move(axes), keepdims); }
Tensor max(Tensor x, std::vector<int> axes, bool keepdims) { return reduce(Op::Max, x, std::move(axes), keepdims); }

Tensor argmax(Tensor x, int axis) {
  if (!x.valid()) throw ArgumentError("argmax: empty tensor operand");
  int a = norm_axis("argmax", axis, x.ndim());
  Shape s = x.shape();
  s.erase(s.begin() + a);
  return make_node(x.graph(), Op::Argmax, DType::i32, std::move(s), {x.id()}, {a});
}

// ---- layout ----------------------------------------------------------------------

Tensor reshape(Tensor x, Shape shape) {
  if (!x.valid()) throw ArgumentError("reshape: empty tensor operand");
  int nb = 0;
  for (Dim d : shape) {
    if (d == batch) ++nb;
    else if (d < 0) throw ShapeError("reshape: invalid target shape " + to_string(shape));
  }
  const Shape xs = x.shape();
  int xb = static_cast<int>(std::count(xs.begin(), xs.end(), batch));
  if (nb != xb || static_numel(shape) != static_numel(x.shape()))
    throw ShapeError("reshape: cannot reshape " + shp(x) + " to " + to_string(shape));
  if (shape == x.shape()) return x;
  return make_node(x.graph(), Op::Reshape, x.dtype(), std::move(shape), {x.id()});
}

Tensor flatten(Tensor x, int start_axis) {
  if (!x.valid()) throw ArgumentError("flatten: empty tensor operand");
  int s = start_axis < 0 ? start_axis + x.ndim() : start_axis;
  if (s < 0 || s > x.ndim())
    throw ShapeError("flatten: start axis " + std::to_string(start_axis) + " out of range for " + shp(x));
  const Shape xs = x.shape();
  Shape r(xs.begin(), xs.begin() + s);
  Dim tail = 1;
  for (int i = s; i < x.ndim(); ++i) {
    if (x.shape()[i] == batch)
      throw ShapeError("flatten: cannot merge the batch dim of " + shp(x) + " with other dims");
    tail *= x.shape()[i];
  }
  r.push_back(tail);
  return reshape(x, std::move(r));
}

Tensor transpose(Tensor x, std::vector<int> perm) {
  if (!x.valid()) throw ArgumentError("transpose: empty tensor operand");
  const int nd = x.ndim();
  if (perm.empty())
    for (int i = nd - 1; i >= 0; --i) perm.push_back(i);
  if (static_cast<int>(perm.size()) != nd)
    throw ShapeError("transpose: permutation of " + std::to_string(perm.size()) + " axes for " + shp(x));
  std::vector<char> seen(nd, 0);
  Shape s;
  std::vector<int64_t> p;
  for (int a : perm) {
    int n = norm_axis("transpose", a, nd);
    if (seen[n]++) throw ShapeError("transpose: axis " + std::to_string(a) + " repeated in permutation");
    s.push_back(x.shape()[n]);
    p.push_back(n);
  }
  bool identity = true;
  for (int i = 0; i < nd; ++i) identity &= p[i] == i;
  if (identity) return x;
  check_loop_dims("transpose", plan::transpose_dims(resolve(x.shape(), kCheckBatch), p),
                  "transposing " + shp(x) + " by " + to_string(p), "stay adjacent and in order");
  return make_node(x.graph(), Op::Transpose, x.dtype(), std::move(s), {x.id()}, std::move(p));
}

Tensor broadcast_to(Tensor x, Shape shape) {
  if (!x.valid()) throw ArgumentError("broadcast_to: empty tensor operand");
  if (shape.size() < x.shape().size() || broadcast_shapes("broadcast_to", x.shape(), shape) != shape)
    throw ShapeError("broadcast_to: cannot broadcast " + shp(x) + " to " + to_string(shape));
  if (shape == x.shape()) return x;
  check_loop_dims("broadcast_to",
                  plan::broadcast_dims(resolve(shape, kCheckBatch), resolve(x.shape(), kCheckBatch), nullptr),
                  "broadcasting " + shp(x) + " to " + to_string(shape), "all broadcast or none");
  return make_node(x.graph(), Op::BroadcastTo, x.dtype(), std::move(shape), {x.id()});
}

// ---- linear algebra --------------------------------------------------------------

// The batch dims of a batched product: a's and b's leading dims broadcast
// (numpy rules; `batch` matches `batch` or 1).
static Shape lead(const Shape& s) { return Shape(s.begin(), s.end() - 2); }

Tensor batch_matmul_to(Tensor a, Tensor b, bool trans_a, bool trans_b, const Shape& out_batch) {
  Graph& g = same_graph("matmul", a, b);
  const Shape as = a.shape(), bs = b.shape();
  const size_t ra = as.size(), rb = bs.size();
  Dim m = as[ra - (trans_a ? 1 : 2)], ka = as[ra - (trans_a ? 2 : 1)];
  Dim kb = bs[rb - (trans_b ? 1 : 2)], n = bs[rb - (trans_b ? 2 : 1)];
  auto shapes = [&] {
    return to_string(as) + (trans_a ? "^T" : "") + " x " + to_string(bs) + (trans_b ? "^T" : "");
  };
  if (!dims_match(ka, kb)) throw ShapeError("matmul: inner dims differ: " + shapes());
  Shape full;
  try {
    full = broadcast_shapes("matmul", lead(as), lead(bs));
  } catch (const ShapeError&) {
    throw ShapeError("matmul: the batch dims of " + shapes() + " do not broadcast");
  }
  // out_batch: the full batch shape, or one it sums down to.
  if (out_batch.size() > full.size() || broadcast_shapes("matmul", out_batch, full) != full)
    throw ShapeError("matmul: batch dims " + to_string(out_batch) + " are not a sum of the product's " +
                     to_string(full) + " (" + shapes() + ")");
  {
    const Shape rf = resolve(full, kCheckBatch);
    check_loop_dims("matmul", plan::batch_matmul_dims(rf, resolve(lead(as), kCheckBatch),
                                                      resolve(lead(bs), kCheckBatch), resolve(out_batch, kCheckBatch)),
                    "the batch dims of " + shapes(), "broadcast alike in both operands");
  }
  Shape out = out_batch;
  out.push_back(m);
  out.push_back(n);
  return make_node(g, Op::BatchMatMul, DType::f32, std::move(out), {a.id(), b.id()}, {trans_a, trans_b});
}

Tensor matmul(Tensor a, Tensor b, bool trans_a, bool trans_b) {
  Graph& g = same_graph("matmul", a, b);
  need_f32("matmul", a);
  need_f32("matmul", b);
  if (a.ndim() < 2 || b.ndim() < 2)
    throw ShapeError("matmul: operands must have at least 2 dims, got " + shp(a) + " x " + shp(b) +
                     " (reshape a vector to [1, n] or [n, 1])");
  if (a.ndim() > 2 || b.ndim() > 2) {
    const Shape as = a.shape(), bs = b.shape();
    Shape full;
    try {
      full = broadcast_shapes("matmul", lead(as), lead(bs));
    } catch (const ShapeError&) {
      throw ShapeError("matmul: the batch dims of " + shp(a) + (trans_a ? "^T" : "") + " x " + shp(b) +
                       (trans_b ? "^T" : "") + " do not broadcast");
    }
    return batch_matmul_to(a, b, trans_a, trans_b, full);
  }
  Dim m = a.shape()[trans_a ? 1 : 0], ka = a.shape()[trans_a ? 0 : 1];
  Dim kb = b.shape()[trans_b ? 1 : 0], n = b.shape()[trans_b ? 0 : 1];
  if (!dims_match(ka, kb))
    throw ShapeError("matmul: inner dims differ: " + shp(a) + (trans_a ? "^T" : "") + " x " + shp(b) +
                     (trans_b ? "^T" : ""));
  return make_node(g, Op::MatMul, DType::f32, {m, n}, {a.id(), b.id()}, {trans_a, trans_b});
}

// ---- shape ops ---------------------------------------------------------------------

static void need_4byte(const char* op, const Tensor& t) {
  if (t.dtype() != DType::f32 && t.dtype() != DType::i32)
    throw TypeError(std::string(op) + ": expects f32 or i32, got " + dtype_name(t.dtype()) + " tensor of shape " +
                    shp(t));
}

Tensor concat(const std::vector<Tensor>& xs, int axis) {
  if (xs.empty()) throw ArgumentError("concat: no operands");
  for (const Tensor& x : xs) same_graph("concat", xs[0], x);
  const Tensor& x0 = xs[0];
  need_4byte("concat", x0);
  auto all = [&] {
    std::string r;
    for (const Tensor& x : xs) r += (r.empty() ? "" : ", ") + shp(x);
    return r;
  };
  const int nd = x0.ndim();
  const int a = norm_axis("concat", axis, nd);
  Shape out = x0.shape();
  Dim total = 0;
  for (const Tensor& x : xs) {
    if (x.dtype() != x0.dtype())
      throw TypeError("concat: operands of different dtypes (" + std::string(dtype_name(x0.dtype())) + " and " +
                      dtype_name(x.dtype()) + "): " + all());
    if (x.ndim() != nd) throw ShapeError("concat: operands of different ranks: " + all());
    const Shape xs_ = x.shape();
    for (int i = 0; i < nd; ++i) {
      if (i == a) continue;
      if (!dims_match(xs_[i], out[i]))
        throw ShapeError("concat: dim " + std::to_string(i) + " differs between operands along axis " +
                         std::to_string(a) + ": " + all());
    }
    if (xs_[a] == batch && xs.size() > 1)
      throw ShapeError("concat: cannot join along the batch dim (axis " + std::to_string(a) + "): " + all());
    if (xs_[a] != batch) total += xs_[a];
  }
  if (xs.size() == 1) return x0;
  out[a] = total;
  std::vector<int32_t> ids;
  for (const Tensor& x : xs) ids.push_back(x.id());
  return make_node(x0.graph(), Op::Concat, x0.dtype(), std::move(out), std::move(ids), {a});
}

Tensor slice(Tensor x, int axis, int64_t begin, int64_t end) {
  if (!x.valid()) throw ArgumentError("slice: empty tensor operand");
  need_4byte("slice", x);
  const int a = norm_axis("slice", axis, x.ndim());
  const Dim d = x.shape()[a];
  if (d == batch)
    throw ShapeError("slice: cannot slice the batch dim (axis " + std::to_string(axis) + ") of " + shp(x));
  // Python's rules: negative counts from the end, then clamp to [0, d];
  // a reversed range is empty.
  auto norm = [d](int64_t v) {
    if (v < 0) v = v < -d ? 0 : v + d;
    return std::min<int64_t>(v, d);
  };
  const int64_t b = norm(begin), e = std::max(b, norm(end));
  if (b == 0 && e == d) return x;
  Shape s = x.shape();
  s[a] = e - b;
  return make_node(x.graph(), Op::Slice, x.dtype(), std::move(s), {x.id()}, {a, b, e});
}

Tensor slice_grad(Tensor g, const Shape& x_shape, int axis, int64_t begin, int64_t end) {
  if (!g.valid()) throw ArgumentError("slice_grad: empty tensor operand");
  Shape want = x_shape;
  if (axis < 0 || axis >= static_cast<int>(want.size()) || begin < 0 || end < begin || end > want[axis])
    throw ShapeError("slice_grad: range [" + std::to_string(begin) + ", " + std::to_string(end) + ") of axis " +
                     std::to_string(axis) + " is not inside " + to_string(x_shape));
  want[axis] = end - begin;
  if (want != g.shape())
    throw ShapeError("slice_grad: gradient " + shp(g) + " does not match the slice " + to_string(want));
  if (begin == 0 && end == x_shape[axis]) return g;
  return make_node(g.graph(), Op::SliceGrad, g.dtype(), x_shape, {g.id()}, {axis, begin, end});
}

Tensor embedding(Tensor table, Tensor indices) {
  Graph& g = same_graph("embedding", table, indices);
  need_f32("embedding", table);
  need_ndim("embedding", table, 2, "table [V, D]");
  if (indices.dtype() != DType::i32)
    throw TypeError("embedding: indices must be i32, got " + std::string(dtype_name(indices.dtype())) +
                    " tensor of shape " + shp(indices));
  if (has_batch(table.shape()))
    throw ShapeError("embedding: table " + shp(table) + " must have concrete dims");
  Shape s = indices.shape();
  s.push_back(table.shape()[1]);
  return make_node(g, Op::Embedding, DType::f32, std::move(s), {table.id(), indices.id()});
}

Tensor embedding_grad(Tensor g, Tensor indices, const Shape& table_shape) {
  Graph& gr = same_graph("embedding_grad", g, indices);
  Shape want = indices.shape();
  if (table_shape.size() != 2) throw ShapeError("embedding_grad: table shape " + to_string(table_shape) + " is not 2-D");
  want.push_back(table_shape[1]);
  if (want != g.shape())
    throw ShapeError("embedding_grad: gradient " + shp(g) + " does not match indices " + shp(indices) +
                     " and table " + to_string(table_shape));
  return make_node(gr, Op::EmbeddingGrad, DType::f32, table_shape, {g.id(), indices.id()});
}

// ---- neural-network ops ------------------------------------------------------------

static Tensor softmax_like(Op op, Tensor x, int axis) {
  if (!x.valid()) throw ArgumentError(std::string(op_name(op)) + ": empty tensor operand");
  need_f32(op_name(op), x);
  int a = norm_axis(op_name(op), axis, x.ndim());
  return make_node(x.graph(), op, DType::f32, x.shape(), {x.id()}, {a});
}

Tensor softmax(Tensor x, int axis) { return softmax_like(Op::Softmax, x, axis); }
Tensor log_softmax(Tensor x, int axis) { return softmax_like(Op::LogSoftmax, x, axis); }

Tensor softmax_cross_entropy(Tensor logits, Tensor labels) {
  Graph& g = same_graph("softmax_cross_entropy", logits, labels);
  need_f32("softmax_cross_entropy", logits);
  need_ndim("softmax_cross_entropy", logits, 2, "logits");
  need_ndim("softmax_cross_entropy", labels, 1, "labels");
  if (labels.dtype() != DType::i32)
    throw TypeError("softmax_cross_entropy: labels must be i32, got " + std::string(dtype_name(labels.dtype())));
  if (!dims_match(logits.shape()[0], labels.shape()[0]))
    throw ShapeError("softmax_cross_entropy: logits " + shp(logits) + " and labels " + shp(labels) +
                     " have different row counts");
  return make_node(g, Op::SoftmaxCrossEntropy, DType::f32, {logits.shape()[0]}, {logits.id(), labels.id()});
}

static Dim window_out(const char* op, const Tensor& x, Dim in, Dim k, Dim s, Dim p) {
  if (in == batch)
    throw ShapeError(std::string(op) + ": spatial dims must be concrete, got " + shp(x));
  if (in + 2 * p < k)
    throw ShapeError(std::string(op) + ": window " + std::to_string(k) + " (padding " + std::to_string(p) +
                     ") larger than input " + shp(x));
  return (in + 2 * p - k) / s + 1;
}

Tensor conv2d(Tensor x, Tensor w, Conv2dOptions opt) {
  Graph& g = same_graph("conv2d", x, w);
  need_f32("conv2d", x);
  need_f32("conv2d", w);
  need_ndim("conv2d", x, 4, "input [N, C, H, W]");
  need_ndim("conv2d", w, 4, "weight [O, C, KH, KW]");
  if (opt.stride < 1 || opt.padding < 0)
    throw ShapeError("conv2d: stride must be >= 1 and padding >= 0");
  const Shape &xs = x.shape(), &ws = w.shape();
  if (xs[1] != ws[1])
    throw ShapeError("conv2d: input " + shp(x) + " has " + std::to_string(xs[1]) + " channels, weight " +
                     shp(w) + " expects " + std::to_string(ws[1]));
  Dim oh = window_out("conv2d", x, xs[2], ws[2], opt.stride, opt.padding);
  Dim ow = window_out("conv2d", x, xs[3], ws[3], opt.stride, opt.padding);
  return make_node(g, Op::Conv2d, DType::f32, {xs[0], ws[0], oh, ow}, {x.id(), w.id()},
                   {opt.stride, opt.stride, opt.padding, opt.padding});
}

Tensor max_pool2d(Tensor x, int k, int stride, int padding) {
  if (!x.valid()) throw ArgumentError("max_pool2d: empty tensor operand");
  need_f32("max_pool2d", x);
  need_ndim("max_pool2d", x, 4, "input [N, C, H, W]");
  if (stride == 0) stride = k;
  if (k < 1 || stride < 1 || padding < 0 || padding >= k)
    throw ShapeError("max_pool2d: need k >= 1, stride >= 1 and 0 <= padding < k");
  const Shape& xs = x.shape();
  Dim oh = window_out("max_pool2d", x, xs[2], k, stride, padding);
  Dim ow = window_out("max_pool2d", x, xs[3], k, stride, padding);
  return make_node(x.graph(), Op::MaxPool2d, DType::f32, {xs[0], xs[1], oh, ow}, {x.id()},
                   {k, k, stride, stride, padding, padding});
}

Tensor avg_pool2d(Tensor x, int k, int stride, int padding) {
  if (!x.valid()) throw ArgumentError("avg_pool2d: empty tensor operand");
  need_f32("avg_pool2d", x);
  need_ndim("avg_pool2d", x, 4, "input [N, C, H, W]");
  if (stride == 0) stride = k;
  if (k < 1 || stride < 1 || padding < 0 || padding > k / 2)
    throw ShapeError("avg_pool2d: need k >= 1, stride >= 1 and 0 <= padding <= k / 2, got k " + std::to_string(k) +
                     ", stride " + std::to_string(stride) + ", padding " + std::to_string(padding));
  const Shape& xs = x.shape();
  Dim oh = window_out("avg_pool2d", x, xs[2], k, stride, padding);
  Dim ow = window_out("avg_pool2d", x, xs[3], k, stride, padding);
  return make_node(x.graph(), Op::AvgPool2d, DType::f32, {xs[0], xs[1], oh, ow}, {x.id()},
                   {k, k, stride, stride, padding, padding});
}

Tensor global_avg_pool2d(Tensor x) {
  if (!x.valid()) throw ArgumentError("global_avg_pool2d: empty tensor operand");
  need_f32("global_avg_pool2d", x);
  need_ndim("global_avg_pool2d", x, 4, "input [N, C, H, W]");
  const Shape& xs = x.shape();
  if (xs[2] == batch || xs[3] == batch)
    throw ShapeError("global_avg_pool2d: spatial dims must be concrete, got " + shp(x));
  // The planner's reduction over the two trailing dims is one contiguous
  // run per (n, c): a dedicated kernel would make the same single pass.
  return mean(x, {2, 3});
}

namespace {

void need_vector(const char* op, const Tensor& t, Dim n, const char* what, const Tensor& x) {
  if (!t.valid()) throw ArgumentError(std::string(op) + ": empty tensor operand (" + what + ")");
  if (&t.graph() != &x.graph()) throw ArgumentError(std::string(op) + ": " + what + " belongs to another graph");
  need_f32(op, t);
  if (t.shape() != Shape{n})
    throw ShapeError(std::string(op) + ": " + what + " must have shape [" + std::to_string(n) + "] for input " +
                     shp(x) + ", got " + shp(t));
}

void need_eps(const char* op, float eps) {
  if (!(eps >= 0.f) || !std::isfinite(eps))
    throw ArgumentError(std::string(op) + ": eps must be finite and >= 0, got " + std::to_string(eps));
}

}  // namespace

Tensor layer_norm(Tensor x, Tensor gamma, Tensor beta, float eps) {
  if (!x.valid()) throw ArgumentError("layer_norm: empty tensor operand");
  need_f32("layer_norm", x);
  if (x.ndim() < 1) throw ShapeError("layer_norm: input must have at least 1 dim, got " + shp(x));
  const Dim d = x.shape().back();
  if (d == batch) throw ShapeError("layer_norm: the normalised (last) dim must be concrete, got " + shp(x));
  need_vector("layer_norm", gamma, d, "gamma", x);
  need_vector("layer_norm", beta, d, "beta", x);
  need_eps("layer_norm", eps);
  return make_node(x.graph(), Op::LayerNorm, DType::f32, x.shape(), {x.id(), gamma.id(), beta.id()}, {}, {eps});
}

namespace {

// Training with statistics over every rank's rows (SyncBatchNorm), out of
// graph ops and rank_sum: the count, the sum and then the centred sum of
// squares, each summed over the ranks (the centred second pass, as PyTorch
// combines per-rank variances, keeps the cancellation of E[x^2] - mean^2
// out). The normalisation is plain ops, so the gradient goes through the
// statistics by autodiff: rank_sum's gradient is rank_sum of the incoming
// one, which is what SyncBatchNorm's backward reduces (the sums of dy and
// of dy * xhat over all ranks).
Tensor sync_batch_norm(Tensor x, Tensor gamma, Tensor beta, Tensor running_mean, Tensor running_var,
                       const BatchNormOptions& opt, const std::vector<int>& axes, int64_t per) {
  Graph& g = x.graph();
  const Shape xs = x.shape();
  const Dim c = xs[1];
  Shape bshape(xs.size(), 1);  // [1, C, 1, ...]: a per-channel value broadcast over x
  bshape[1] = c;
  // This rank's values per channel: its rows (a constant 1 per row, summed:
  // no gradient, whatever x holds) times the values per row and channel.
  Tensor rows = sum(broadcast_to(g.constant(1.f), Shape{xs[0]}));
  Tensor count = rank_sum(reshape(rows * static_cast<float>(per), {1}));  // [1]
  Tensor mu = rank_sum(sum(x, axes)) / count;                            // [C]
  Tensor d = x - reshape(mu, bshape);
  Tensor var = rank_sum(sum(square(d), axes)) / count;                   // biased, [C]
  Tensor y = d * reshape(pow(var + opt.eps, -0.5f) * gamma, bshape) + reshape(beta, bshape);
  const float m = opt.momentum;
  g.add_state_update(y, {running_mean, running_mean * (1.f - m) + mu * m});
  // PyTorch's unbiased running variance, over the count of every rank.
  g.add_state_update(y, {running_var, running_var * (1.f - m) + var * (count / (count - 1.f)) * m});
  return y;
}

}  // namespace

Tensor rank_sum(Tensor x) {
  if (!x.valid()) throw ArgumentError("rank_sum: empty tensor operand");
  need_f32("rank_sum", x);
  if (has_batch(x.shape()))
    throw ShapeError("rank_sum: the operand must have no batch dim (each rank's rows differ in number; reduce "
                     "them first, e.g. with sum), got " + shp(x));
  return make_node(x.graph(), Op::RankSum, DType::f32, x.shape(), {x.id()});
}

Tensor scaled_dot_product_attention(Tensor q, Tensor k, Tensor v, AttentionOptions opt) {
  const char* op = "scaled_dot_product_attention";
  if (!q.valid() || !k.valid() || !v.valid()) throw ArgumentError(std::string(op) + ": empty tensor operand");
  Graph& g = same_graph(op, q, k);
  same_graph(op, q, v);
  need_f32(op, q);
  need_f32(op, k);
  need_f32(op, v);
  const bool tf = opt.layout == AttentionOptions::tokens_first;
  if (opt.layout != AttentionOptions::heads_first && !tf)
    throw ArgumentError(std::string(op) + ": unknown layout " + std::to_string(static_cast<int>(opt.layout)));
  const Shape qs = q.shape(), ks = k.shape(), vs = v.shape();
  auto shapes = [&] { return "q " + to_string(qs) + ", k " + to_string(ks) + ", v " + to_string(vs); };
  auto fail = [&](const std::string& why) {
    throw ShapeError(std::string(op) + " (" + (tf ? "tokens_first" : "heads_first") + "): " + why + "; got " +
                     shapes());
  };
  const size_t r = qs.size();
  if (tf ? r != 4 : r < 2) fail(tf ? "operands must be [N, L, H, E]" : "operands must be [..., L, E]");
  if (ks.size() != r || vs.size() != r) fail("q, k and v must have the same number of dims");
  // The dims that must agree in all three: the leading ones (heads first),
  // N and H (tokens first); k and v share S, q and k share E.
  for (size_t i = 0; i < r; ++i) {
    const bool shared = tf ? (i == 0 || i == 2) : i + 2 < r;
    if (shared && (qs[i] != ks[i] || qs[i] != vs[i])) fail("dim " + std::to_string(i) + " differs");
  }
  const size_t l_ax = tf ? 1 : r - 2, e_ax = r - 1;
  if (ks[l_ax] != vs[l_ax]) fail("k and v must have the same number of keys");
  if (qs[e_ax] != ks[e_ax]) fail("q and k must have the same feature size E");
  for (size_t i = 0; i < r; ++i)
    if ((qs[i] == batch || ks[i] == batch || vs[i] == batch) && !(tf ? i == 0 : i + 2 < r))
      fail("only the leading (batch) dims may be `batch`");
  for (size_t i = 0; i < r; ++i)
    if (qs[i] == 0 || ks[i] == 0 || vs[i] == 0) fail("empty dims are not supported");
  if (!std::isfinite(opt.scale) || opt.scale < 0.f)
    throw ArgumentError(std::string(op) + ": scale must be finite and >= 0 (0: 1/sqrt(E)), got " +
                        std::to_string(opt.scale));
  const float scale = opt.scale > 0.f ? opt.scale
                                      : static_cast<float>(1.0 / std::sqrt(static_cast<double>(qs[e_ax])));
  Shape out = qs;
  out[e_ax] = vs[e_ax];
  return make_node(g, Op::Attention, DType::f32, std::move(out), {q.id(), k.id(), v.id()},
                   {static_cast<int64_t>(opt.layout)}, {scale});
}

Tensor batch_norm(Tensor x, Tensor gamma, Tensor beta, Tensor running_mean, Tensor running_var,
                  BatchNormOptions opt) {
  if (!x.valid()) throw ArgumentError("batch_norm: empty tensor operand");
  need_f32("batch_norm", x);
  if (x.ndim() < 2) throw ShapeError("batch_norm: input must be [N, C, ...], got " + shp(x));
  const Shape xs = x.shape();
  const Dim c = xs[1];
  if (c == batch) throw ShapeError("batch_norm: the channel dim (1) must be concrete, got " + shp(x));
  for (size_t i = 2; i < xs.size(); ++i)
    if (xs[i] == batch) throw ShapeError("batch_norm: only dim 0 may be the batch dim, got " + shp(x));
  need_vector("batch_norm", gamma, c, "gamma", x);
  need_vector("batch_norm", beta, c, "beta", x);
  need_vector("batch_norm", running_mean, c, "running_mean", x);
  need_vector("batch_norm", running_var, c, "running_var", x);
  for (const Tensor* t : {&running_mean, &running_var})
    if (t->node().op != Op::Variable)
      throw ArgumentError("batch_norm: running_mean and running_var must be variables (Graph::variable), got a " +
                          std::string(op_name(t->node().op)) + " node");
  need_eps("batch_norm", opt.eps);
  if (!(opt.momentum >= 0.f && opt.momentum <= 1.f))
    throw ArgumentError("batch_norm: momentum must be in [0, 1], got " + std::to_string(opt.momentum));
  Graph& g = x.graph();
  if (!opt.training)
    return make_node(g, Op::BatchNorm, DType::f32, xs, {x.id(), running_mean.id(), running_var.id(), gamma.id(),
                                                       beta.id()}, {}, {opt.eps}, false);
  // Values per channel; with a batch dim it is known per call (the planner
  // refuses a batch of one value per channel then).
  int64_t per = 1;
  for (size_t i = 2; i < xs.size(); ++i) per *= xs[i];
  if (xs[0] != batch && xs[0] * per == 1)
    throw ShapeError("batch_norm: expected more than 1 value per channel when training, got input " + shp(x));
  std::vector<int> axes{0};
  for (int i = 2; i < x.ndim(); ++i) axes.push_back(i);
  if (opt.sync) return sync_batch_norm(x, gamma, beta, running_mean, running_var, opt, axes, per);
  Tensor mu = mean(x, axes);
  Tensor var = make_node(g, Op::BatchNormVar, DType::f32, {c}, {x.id(), mu.id()});
  Tensor y = make_node(g, Op::BatchNorm, DType::f32, xs, {x.id(), mu.id(), var.id(), gamma.id(), beta.id()}, {},
                       {opt.eps}, true);
  const float m = opt.momentum;
  g.add_state_update(y, {running_mean, running_mean * (1.f - m) + mu * m});
  g.add_state_update(y, {running_var, make_node(g, Op::BatchNormRunningVar, DType::f32, {c},
                                                {running_var.id(), var.id(), x.id()}, {}, {m})});
  return y;
}

Tensor dropout(Tensor x, float p, bool deterministic) {
  if (!x.valid()) throw ArgumentError("dropout: empty tensor operand");
  need_f32("dropout", x);
  if (!(p >= 0.f && p < 1.f)) throw ArgumentError("dropout: p must be in [0, 1), got " + std::to_string(p));
  if (deterministic || p == 0.f) return x;
  Graph& g = x.graph();
  Tensor mask = make_node(g, Op::DropoutMask, DType::f32, x.shape(), {x.id()}, {g.next_stream()}, {p});
  return mul(x, mask);
}

}  // namespace synk
