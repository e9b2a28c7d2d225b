// exec/plan/geometry.cpp — the geometry of broadcasts, transposes,
// reductions and axis ops, computed once per plan from resolved shapes.
//
// Broadcasting collapses dims so the common cases — same shape, [N,C]+[C],
// tensor+scalar, [N,C,H,W]+[C,1,1] — become one or two loops whose innermost
// loop is a plain vectorisable one; a reduction's dims are collapsed into
// alternating kept/reduced runs the same way.
#include "exec/plan/geometry.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "synk/error.hpp"

namespace synk::plan {

namespace {

int64_t dim_at(const Shape& s, int64_t i, int64_t nd) {
  int64_t j = i - (nd - static_cast<int64_t>(s.size()));
  return j < 0 ? 1 : s[static_cast<size_t>(j)];
}

std::vector<int64_t> contiguous_strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int64_t i = static_cast<int64_t>(s.size()) - 2; i >= 0; --i)
    st[static_cast<size_t>(i)] = st[static_cast<size_t>(i + 1)] * s[static_cast<size_t>(i + 1)];
  return st;
}

void finish_output_strides(Strided& s) {
  int64_t st = 1;
  for (int i = s.nd - 1; i >= 0; --i) {
    s.so[i] = st;
    st *= s.dim[i];
  }
}

// The iteration dims (outermost first) folded into as few runs as possible,
// from the inside out: dim k joins the run inside it when every operand
// steps through the two as one contiguous (or broadcast) run.
struct Runs {
  std::vector<int64_t> d, a, b, c;  // innermost first
};

Runs merge_runs(const std::vector<int64_t>& dims, const std::vector<int64_t>& sa, const std::vector<int64_t>& sb,
                const std::vector<int64_t>& sc) {
  Runs r;
  for (size_t k = dims.size(); k-- > 0;) {
    if (!r.d.empty() && sa[k] == r.a.back() * r.d.back() && sb[k] == r.b.back() * r.d.back() &&
        sc[k] == r.c.back() * r.d.back()) {
      r.d.back() *= dims[k];
    } else {
      r.d.push_back(dims[k]);
      r.a.push_back(sa[k]);
      r.b.push_back(sb[k]);
      r.c.push_back(sc[k]);
    }
  }
  return r;
}

// The Strided of merged runs; what() names the op for the error when more
// than kMaxDims runs remain. An empty iteration (numel 0) has nothing to
// run, whatever its dims.
template <class What>
Strided collapse(const Runs& r, int64_t numel, What what) {
  Strided s;
  s.numel = numel;
  if (r.d.empty() || numel == 0) {
    s.nd = 1;
    s.dim[0] = numel == 0 ? 0 : 1;
  } else {
    if (r.d.size() > static_cast<size_t>(kMaxDims))
      throw ShapeError("CPU executor: " + what() + " needs more than " + std::to_string(kMaxDims) +
                       " dims after collapsing");
    s.nd = static_cast<int>(r.d.size());
    for (int i = 0; i < s.nd; ++i) {
      const size_t k = r.d.size() - 1 - static_cast<size_t>(i);
      s.dim[i] = r.d[k];
      s.sa[i] = r.a[k];
      s.sb[i] = r.b[k];
      s.sc[i] = r.c[k];
    }
  }
  finish_output_strides(s);
  return s;
}

// The iteration dims of a broadcast (size-1 output dims left out) with each
// operand's stride in its own contiguous layout, 0 where it broadcasts.
Runs broadcast_runs(const Shape& out, const Shape& a, const Shape* b, const Shape* c) {
  const int64_t nd = static_cast<int64_t>(out.size());
  std::vector<int64_t> dims, sa, sb, sc;
  std::vector<int64_t> sta(static_cast<size_t>(nd), 0), stb(static_cast<size_t>(nd), 0),
      stc(static_cast<size_t>(nd), 0);
  // Operand x's contiguous stride per output dim, 0 where it broadcasts.
  auto strides = [&](const Shape& x, std::vector<int64_t>& st) {
    int64_t acc = 1;
    for (int64_t i = nd - 1; i >= 0; --i) {
      const int64_t d = dim_at(x, i, nd);
      st[static_cast<size_t>(i)] = d == 1 ? 0 : acc;
      acc *= d;
    }
  };
  strides(a, sta);
  if (b) strides(*b, stb);
  if (c) strides(*c, stc);
  for (int64_t i = 0; i < nd; ++i) {
    if (out[static_cast<size_t>(i)] == 1) continue;
    dims.push_back(out[static_cast<size_t>(i)]);
    sa.push_back(sta[static_cast<size_t>(i)]);
    sb.push_back(stb[static_cast<size_t>(i)]);
    sc.push_back(stc[static_cast<size_t>(i)]);
  }
  return merge_runs(dims, sa, sb, sc);
}

// A transpose: the output dims in order (size 1 left out) with the input's
// strides; a zero stride for "b" never stops a merge.
Runs transpose_runs(const Shape& in, const std::vector<int64_t>& perm) {
  std::vector<int64_t> st = contiguous_strides(in);
  std::vector<int64_t> dims, sa;
  for (int64_t p : perm) {
    size_t k = static_cast<size_t>(p);
    if (in[k] == 1) continue;
    dims.push_back(in[k]);
    sa.push_back(st[k]);
  }
  const std::vector<int64_t> none(dims.size(), 0);
  return merge_runs(dims, sa, none, none);
}

}  // namespace

Strided make_broadcast(const Shape& out, const Shape& a, const Shape* b, const Shape* c) {
  return collapse(broadcast_runs(out, a, b, c), numel(out),
                  [&] { return "broadcast of " + to_string(a) + " to " + to_string(out); });
}

Strided make_transpose(const Shape& in, const std::vector<int64_t>& perm) {
  return collapse(transpose_runs(in, perm), numel(in), [&] { return "transpose of " + to_string(in); });
}

int broadcast_dims(const Shape& out, const Shape& a, const Shape* b, const Shape* c) {
  return static_cast<int>(broadcast_runs(out, a, b, c).d.size());
}

int transpose_dims(const Shape& in, const std::vector<int64_t>& perm) {
  return static_cast<int>(transpose_runs(in, perm).d.size());
}

namespace {

// The input's dims (size 1 left out) merged into alternating kept/reduced
// runs, outermost first.
struct RedRuns {
  std::vector<int64_t> d;
  std::vector<bool> red;
};

RedRuns reduce_runs(const Shape& in, const std::vector<bool>& is_red) {
  RedRuns r;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == 1) continue;
    if (!r.d.empty() && r.red.back() == is_red[i]) {
      r.d.back() *= in[i];
    } else {
      r.d.push_back(in[i]);
      r.red.push_back(is_red[i]);
    }
  }
  return r;
}

std::vector<bool> reduced_axes(const Shape& in, const std::vector<int64_t>& axes) {
  std::vector<bool> is_red(in.size(), false);
  for (int64_t a : axes) is_red.at(static_cast<size_t>(a)) = true;
  return is_red;
}

// The CUDA view of a reduction: its runs split into kept and reduced dims.
void split_kept_reduced(Reduce& r) {
  r.nk = r.nr = 0;
  r.r_count = 1;
  for (int i = 0; i < r.nd; ++i) {
    if (r.red[i]) {
      r.rdim[r.nr] = r.dim[i];
      r.rstride[r.nr] = r.sx[i];
      r.nr++;
      r.r_count *= r.dim[i];
    } else {
      r.kdim[r.nk] = r.dim[i];
      r.kstride[r.nk] = r.sx[i];
      r.nk++;
    }
  }
}

}  // namespace

int reduce_dims(const Shape& in, const std::vector<int64_t>& axes) {
  return static_cast<int>(reduce_runs(in, reduced_axes(in, axes)).d.size());
}

Reduce make_reduce(const Shape& in, const std::vector<int64_t>& axes) {
  const std::vector<bool> is_red = reduced_axes(in, axes);
  const RedRuns runs = reduce_runs(in, is_red);
  const std::vector<int64_t>& cd = runs.d;
  const std::vector<bool>& cr = runs.red;
  Reduce r;
  r.in_numel = numel(in);
  r.out_numel = 1;
  for (size_t i = 0; i < in.size(); ++i)
    if (!is_red[i]) r.out_numel *= in[i];
  if (cd.empty()) {
    r.nd = 1;
    r.dim[0] = 1;
    r.red[0] = true;
    r.sx[0] = 1;
    r.so[0] = 0;
    split_kept_reduced(r);
    return r;
  }
  if (cd.size() > static_cast<size_t>(kMaxDims))
    throw ShapeError("CPU executor: reduction of " + to_string(in) + " needs more than " + std::to_string(kMaxDims) +
                     " dims after collapsing");
  r.nd = static_cast<int>(cd.size());
  int64_t sx = 1, so = 1;
  for (int i = r.nd - 1; i >= 0; --i) {
    r.dim[i] = cd[static_cast<size_t>(i)];
    r.red[i] = cr[static_cast<size_t>(i)];
    r.sx[i] = sx;
    sx *= r.dim[i];
    r.so[i] = r.red[i] ? 0 : so;
    if (!r.red[i]) so *= r.dim[i];
  }
  split_kept_reduced(r);
  return r;
}

AxisGeom make_axis(const Shape& in, int64_t axis) {
  AxisGeom g;
  for (int64_t i = 0; i < static_cast<int64_t>(in.size()); ++i) {
    const int64_t d = in[static_cast<size_t>(i)];
    if (i < axis) g.outer *= d;
    else if (i == axis) g.n = d;
    else g.inner *= d;
  }
  return g;
}

// ---- batched matmul ------------------------------------------------------------------

namespace {

// The batch iteration of a batched product, collapsed: dims of size 1
// dropped, neighbours merged where all three operands step through them as
// one run. Matrix strides (in matrices) times the matrix sizes come after.
struct BatchRuns {
  std::vector<int64_t> d, a, b, c;  // innermost first
};

BatchRuns batch_runs(const Shape& full, const Shape& a, const Shape& b, const Shape& out, int64_t ma, int64_t mb,
                     int64_t mc) {
  const int64_t nd = static_cast<int64_t>(full.size());
  auto strides = [&](const Shape& s, int64_t unit) {
    // Stride of each full dim in s's matrices: 0 where s lacks it or has 1.
    std::vector<int64_t> st(static_cast<size_t>(nd), 0);
    int64_t step = unit;
    for (int64_t i = nd - 1; i >= 0; --i) {
      const int64_t d = dim_at(s, i, nd);
      st[static_cast<size_t>(i)] = d == 1 ? 0 : step;
      step *= d;
    }
    return st;
  };
  const std::vector<int64_t> sa = strides(a, ma), sb = strides(b, mb), sc = strides(out, mc);
  BatchRuns r;
  for (int64_t k = nd - 1; k >= 0; --k) {
    const size_t i = static_cast<size_t>(k);
    if (full[i] == 1) continue;
    if (!r.d.empty() && sa[i] == r.a.back() * r.d.back() && sb[i] == r.b.back() * r.d.back() &&
        sc[i] == r.c.back() * r.d.back()) {
      r.d.back() *= full[i];
    } else {
      r.d.push_back(full[i]);
      r.a.push_back(sa[i]);
      r.b.push_back(sb[i]);
      r.c.push_back(sc[i]);
    }
  }
  return r;
}

}  // namespace

int batch_matmul_dims(const Shape& full, const Shape& a, const Shape& b, const Shape& out) {
  return static_cast<int>(batch_runs(full, a, b, out, 1, 1, 1).d.size());
}

BatchGeom make_batch_matmul(const Shape& a, const Shape& b, const Shape& out, bool ta, bool tb) {
  auto fail = [&](const std::string& why) -> BatchGeom {
    throw ShapeError("batched matmul of " + to_string(a) + (ta ? "^T" : "") + " x " + to_string(b) + (tb ? "^T" : "") +
                     " -> " + to_string(out) + ": " + why);
  };
  if (a.size() < 2 || b.size() < 2 || out.size() < 2) return fail("operands need at least 2 dims");
  BatchGeom g;
  const size_t ra = a.size(), rb = b.size(), rc = out.size();
  g.ta = ta;
  g.tb = tb;
  g.m = a[ra - (ta ? 1 : 2)];
  g.k = a[ra - (ta ? 2 : 1)];
  g.n = b[rb - (tb ? 2 : 1)];
  if (b[rb - (tb ? 1 : 2)] != g.k) return fail("inner dims differ");
  if (out[rc - 2] != g.m || out[rc - 1] != g.n) return fail("the output is not [.., m, n]");
  const Shape la(a.begin(), a.end() - 2), lb(b.begin(), b.end() - 2), lc(out.begin(), out.end() - 2);
  const int64_t nd = static_cast<int64_t>(std::max(la.size(), lb.size()));
  Shape full(static_cast<size_t>(nd));
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t x = dim_at(la, i, nd), y = dim_at(lb, i, nd);
    if (x != y && x != 1 && y != 1) return fail("the batch dims do not broadcast");
    full[static_cast<size_t>(i)] = x == 1 ? y : x;
  }
  if (static_cast<int64_t>(lc.size()) > nd) return fail("the output has more batch dims than the product");
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t c = dim_at(lc, i, nd);
    if (c != full[static_cast<size_t>(i)] && c != 1) return fail("the output's batch dims are not a sum of the product's");
  }
  const BatchRuns r = batch_runs(full, la, lb, lc, g.m * g.k, g.k * g.n, g.m * g.n);
  if (r.d.size() > static_cast<size_t>(kMaxDims))
    return fail("more than " + std::to_string(kMaxDims) + " batch dims after collapsing");
  g.nd = static_cast<int>(r.d.size());
  g.count = 1;
  g.out_count = 1;
  for (int i = 0; i < g.nd; ++i) {
    const size_t k = r.d.size() - 1 - static_cast<size_t>(i);
    g.dim[i] = r.d[k];
    g.sa[i] = r.a[k];
    g.sb[i] = r.b[k];
    g.sc[i] = r.c[k];
    g.count *= r.d[k];
    if (r.c[k] != 0) g.out_count *= r.d[k];
    else g.sums = true;
  }
  // One GEMM for the whole batch where the matrices stack (BatchGeom::fold).
  if (g.nd == 1 && g.count > 1) {
    if (!ta && g.sa[0] == g.m * g.k && g.sb[0] == 0 && g.sc[0] == g.m * g.n) g.fold = 1;
    else if (ta && !tb && g.sa[0] == g.m * g.k && g.sb[0] == g.k * g.n && g.sc[0] == 0) g.fold = 2;
  }
  if (g.count == 0 || g.m == 0 || g.n == 0) g.fold = 0;
  return g;
}

AttnGeom make_attention(const Shape& q, const Shape& k, const Shape& v, const Shape* dy, const Shape& out,
                        int64_t layout, int64_t which, float scale) {
  auto fail = [&](const std::string& why) -> AttnGeom {
    throw ShapeError("attention of q " + to_string(q) + ", k " + to_string(k) + ", v " + to_string(v) + " -> " +
                     to_string(out) + ": " + why);
  };
  const bool tf = layout == 1;
  const size_t r = q.size();
  if (layout != 0 && !tf) return fail("unknown layout " + std::to_string(layout));
  if ((tf ? r != 4 : r < 2) || k.size() != r || v.size() != r) return fail("operands of the wrong rank");
  if (!(scale > 0.f) || !std::isfinite(scale)) return fail("the scale must be positive");
  AttnGeom g;
  g.tokens_first = tf;
  g.scale = scale;
  const size_t t_ax = tf ? 1 : r - 2, e_ax = r - 1;
  g.b = 1;
  for (size_t i = 0; i < r; ++i) {
    if (i == t_ax || i == e_ax) continue;
    if (q[i] != k[i] || q[i] != v[i]) return fail("the batch and head dims differ");
    if (tf && i == 2) g.h = q[i];
    else g.b *= q[i];
  }
  g.l = q[t_ax];
  g.e = q[e_ax];
  g.s = k[t_ax];
  g.ev = v[e_ax];
  if (k[e_ax] != g.e || v[t_ax] != g.s) return fail("k must be [.., S, E] and v [.., S, Ev]");
  Shape o = q;
  o[e_ax] = g.ev;
  if (!dy) {
    if (out != o) return fail("the output is not [.., L, Ev]");
    return g;
  }
  if (*dy != o) return fail("the output's gradient is " + to_string(*dy) + ", not " + to_string(o));
  if (which == 3) {
    Shape st{3};
    st.insert(st.end(), q.begin(), q.end());
    if (k != q || v != q || out != st) return fail("a stacked gradient needs q, k, v of one shape and [3, ...]");
  } else if (which < 0 || which > 2 || out != (which == 0 ? q : which == 1 ? k : v)) {
    return fail("gradient " + std::to_string(which) + " does not fit its operand");
  }
  return g;
}

}  // namespace synk::plan
