// exec/cpu/executor.cpp — runs a compiled Plan: binds the pointers of this
// call (arena, caller inputs, variables) and dispatches each step to its
// kernel. Everything shape-dependent was decided by the planner (exec/plan).
//
// Errors raised while a step runs are rethrown with the function name, op
// and node id prepended, keeping their exception type.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "exec/common.hpp"
#include "exec/cpu/executor.hpp"
#include "exec/cpu/kernels.hpp"
#include "synk/error.hpp"

namespace synk::cpu {

bool& cpu_fuse_elementwise() {
  static bool on = [] {
    const char* a = std::getenv("SYNK_CPU_NO_REUSE");
    const char* b = std::getenv("SYNK_CPU_NO_FUSE");
    return !(a && a[0] == '1') && !(b && b[0] == '1');
  }();
  return on;
}

plan::CompileOptions cpu_session_options() {
  plan::CompileOptions o = plan::default_compile_options();
  o.fuse_elementwise = o.fuse_elementwise || (o.fuse && cpu_fuse_elementwise());
  o.fuse_norm_relu = o.fuse_norm_relu || (o.fuse && cpu_fuse_elementwise());
  o.fuse_matmul_gelu_grad = o.fuse_matmul_gelu_grad || (o.fuse && cpu_fuse_elementwise());
  return o;
}

namespace {

using plan::Loc;
using plan::Plan;
using plan::Step;
using plan::ValueLoc;

template <class T> T* P(void* p) { return static_cast<T*>(p); }

// SYNK_CPU_PROFILE=1: time per op kind, printed to stderr at exit; 2 adds
// each convolution shape's time (which layers are slow). A developer aid for
// finding overheads; off by default (one branch a step).
struct OpProfile {
  int level = [] {
    const char* e = std::getenv("SYNK_CPU_PROFILE");
    return e && (e[0] == '1' || e[0] == '2') ? e[0] - '0' : 0;
  }();
  bool on = level > 0;
  // One slot per op kind, the last for fused elementwise groups.
  static constexpr size_t kSlots = static_cast<size_t>(Op::kCount) + 1;
  double ms[kSlots] = {};
  int64_t count[kSlots] = {};
  std::map<std::string, std::pair<double, int64_t>> conv;  // level 2: per convolution shape (ms, steps)
  ~OpProfile() {
    if (!on) return;
    double total = 0;
    for (double t : ms) total += t;
    std::fprintf(stderr, "synk CPU executor profile (%.1f ms in steps)\n", total);
    for (size_t i = 0; i < kSlots; ++i)
      if (count[i] > 0)
        std::fprintf(stderr, "  %-28s %9.1f ms %5.1f%% %8lld steps\n",
                     i == kSlots - 1 ? "(fused elementwise)" : op_name(static_cast<Op>(i)), ms[i],
                     100.0 * ms[i] / (total > 0 ? total : 1), static_cast<long long>(count[i]));
    for (const auto& [shape, t] : conv)
      std::fprintf(stderr, "  %-52s %9.1f ms %8lld steps\n", shape.c_str(), t.first, static_cast<long long>(t.second));
  }
  void add_conv(const Step& s, double ms_taken) {
    const ConvGeom& g = s.conv;
    char key[160];
    std::snprintf(key, sizeof key, "%s n%lld c%lld %lldx%lld o%lld k%lldx%lld s%lld p%lld", op_name(s.op),
                  static_cast<long long>(g.n), static_cast<long long>(g.c), static_cast<long long>(g.h),
                  static_cast<long long>(g.w), static_cast<long long>(g.o), static_cast<long long>(g.kh),
                  static_cast<long long>(g.kw), static_cast<long long>(g.sh), static_cast<long long>(g.ph));
    auto& e = conv[key];
    e.first += ms_taken;
    e.second++;
  }
};
OpProfile g_profile;

void run_step(const Step& s, Plan& p, const RunContext& ctx) {
  void* out = p.ptr[static_cast<size_t>(s.node)];
  void* a = s.in[0] >= 0 ? p.ptr[static_cast<size_t>(s.in[0])] : nullptr;
  void* b = s.in[1] >= 0 ? p.ptr[static_cast<size_t>(s.in[1])] : nullptr;
  void* c = s.in[2] >= 0 ? p.ptr[static_cast<size_t>(s.in[2])] : nullptr;
  switch (s.family) {
    case plan::Family::Binary:
      if (ew::is_compare(s.bop) && s.in_dtype == DType::f32)
        compare_f32(s.bop, s.st, P<float>(a), P<float>(b), P<int32_t>(out));
      else if (s.dtype == DType::f32) binary_f32(s.bop, s.st, P<float>(a), P<float>(b), P<float>(out));
      else binary_i32(s.bop, s.st, P<int32_t>(a), P<int32_t>(b), P<int32_t>(out));
      return;
    case plan::Family::Unary:
      if (s.dtype == DType::i32 && s.uop == UnOp::Neg) neg_i32(s.n, P<int32_t>(a), P<int32_t>(out));
      else if (s.dtype != DType::f32) throw TypeError(std::string(op_name(s.op)) + " needs f32 operands");
      else unary_f32(s.uop, s.n, P<float>(a), P<float>(out), s.f, s.f2);
      return;
    case plan::Family::Ternary:
      if (s.dtype == DType::f32) where_f32(s.st, P<int32_t>(a), P<float>(b), P<float>(c), P<float>(out));
      else where_i32(s.st, P<int32_t>(a), P<int32_t>(b), P<int32_t>(c), P<int32_t>(out));
      return;
    case plan::Family::ByOp:
      break;
  }
  switch (s.op) {
    case Op::Cast:
      if (s.in_dtype == s.dtype) {
        if (out != a) std::memmove(out, a, s.out_bytes());
      } else if (s.dtype == DType::i32) {
        cast_f32_i32(s.n, P<float>(a), P<int32_t>(out));
      } else {
        cast_i32_f32(s.n, P<int32_t>(a), P<float>(out));
      }
      break;
    case Op::Sum: case Op::Mean: case Op::Max:
      if (s.dtype == DType::f32) reduce_f32(s.rop, s.red, P<float>(a), P<float>(out));
      else reduce_i32(s.rop, s.red, P<int32_t>(a), P<int32_t>(out));
      break;
    case Op::Argmax:
      if (s.in_dtype == DType::f32) argmax(s.ax, P<float>(a), P<int32_t>(out));
      else argmax(s.ax, P<int32_t>(a), P<int32_t>(out));
      break;
    case Op::Transpose:
      strided_copy(s.st, P<uint32_t>(a), P<uint32_t>(out));
      break;
    case Op::BroadcastTo:
      strided_copy(s.st, P<uint32_t>(a), P<uint32_t>(out));
      if (s.f != 1.f) {
        float* o = P<float>(out);
        for (int64_t i = 0; i < s.n; ++i) o[i] *= s.f;
      }
      break;
    case Op::MatMul:
      matmul(s.ta, s.tb, s.mm_m, s.mm_n, s.mm_k, P<float>(a), P<float>(b), P<float>(out));
      if (c) bias_relu_cols(s.mm_m, s.mm_n, P<float>(c), s.relu, P<float>(out));
      break;
    case Op::Softmax: case Op::LogSoftmax:
      softmax(s.ax, P<float>(a), P<float>(out), s.op == Op::LogSoftmax);
      break;
    case Op::SoftmaxCrossEntropy: case Op::SoftmaxCrossEntropyGrad: {
      const int32_t* labels = P<int32_t>(b);
      const int64_t bad = s.op == Op::SoftmaxCrossEntropy
          ? softmax_xent(s.mm_m, s.mm_n, P<float>(a), labels, P<float>(out))
          : softmax_xent_grad(s.mm_m, s.mm_n, P<float>(a), labels, P<float>(c), P<float>(out));
      if (bad >= 0)
        throw ArgumentError("label " + std::to_string(labels[bad]) + " at row " + std::to_string(bad) +
                            " is outside [0, " + std::to_string(s.mm_n) + ")");
      break;
    }
    case Op::MaxPool2d:
      max_pool2d(s.pool, P<float>(a), P<float>(out));
      break;
    case Op::MaxPool2dGrad:
      max_pool2d_grad(s.pool, P<float>(a), P<float>(b), P<float>(out));
      break;
    case Op::AvgPool2d:
      avg_pool2d(s.pool, P<float>(a), P<float>(out));
      break;
    case Op::AvgPool2dGrad:
      avg_pool2d_grad(s.pool, P<float>(a), P<float>(out));
      break;
    case Op::LayerNorm:
      layer_norm(s.ax, P<float>(a), P<float>(b), P<float>(c), s.f, P<float>(out));
      break;
    case Op::LayerNormGrad:
      layer_norm_grad(s.ax, P<float>(a), P<float>(b), P<float>(c), s.f, P<float>(out));
      break;
    case Op::BatchNormVar:
      batch_norm_var(s.ax, P<float>(a), P<float>(b), P<float>(out));
      break;
    case Op::BatchNorm:
      batch_norm(s.ax, P<float>(a), P<float>(b), P<float>(c), P<float>(p.ptr_of(s.in[3])), P<float>(p.ptr_of(s.in[4])),
                 s.f, P<float>(out), s.relu);
      break;
    case Op::BatchNormGrad:
      batch_norm_grad(s.ax, P<float>(a), P<float>(b), P<float>(c), P<float>(p.ptr_of(s.in[3])),
                      P<float>(p.ptr_of(s.in[4])), s.f, s.training, P<float>(out),
                      s.in[5] >= 0 ? P<float>(p.ptr_of(s.in[5])) : nullptr);
      break;
    case Op::BatchNormGradGamma:
      batch_norm_grad_gamma(s.ax, P<float>(a), P<float>(b), P<float>(c), P<float>(p.ptr_of(s.in[3])), s.f,
                            P<float>(out));
      break;
    case Op::BatchNormGradSums:
      batch_norm_grad_sums(s.ax, P<float>(a), P<float>(b), P<float>(c), P<float>(p.ptr_of(s.in[3])), s.f,
                           P<float>(out));
      break;
    case Op::BatchNormRunningVar:
      batch_norm_running_var(s.ax, P<float>(a), P<float>(b), s.f, P<float>(out));
      break;
    case Op::DropoutMask:
      dropout_mask(s.n, s.f, dropout_key(ctx.seed, ctx.rank, s.stream, ctx.call), P<float>(out));
      break;
    case Op::Slice:
      slice_copy(s.slice, P<uint32_t>(a), P<uint32_t>(out));
      break;
    case Op::SliceGrad:
      slice_place(s.slice, P<uint32_t>(a), P<uint32_t>(out), true);
      break;
    case Op::Concat:
      for (size_t i = 0; i < s.parts.size(); ++i) {
        SliceGeom part = s.slice;
        part.begin = s.part_at[i];
        part.end = s.part_at[i + 1];
        slice_place(part, P<uint32_t>(p.ptr[static_cast<size_t>(s.parts[i])]), P<uint32_t>(out), false);
      }
      break;
    case Op::Embedding: case Op::EmbeddingGrad: {
      const int32_t* idx = P<int32_t>(b);
      const int64_t bad = s.op == Op::Embedding
          ? embedding(s.mm_m, s.mm_n, s.mm_k, P<float>(a), idx, P<float>(out))
          : embedding_grad(s.mm_m, s.mm_n, s.mm_k, P<float>(a), idx, P<float>(out));
      if (bad >= 0) throw ArgumentError(exec::bad_index_message(idx[bad], bad, s.mm_k));
      break;
    }
    case Op::RankSum:
      // The other ranks' values arrive through the session's combiner (the
      // runtime's comm); a lone session is the only rank.
      if (ctx.rank_sum && *ctx.rank_sum) (*ctx.rank_sum)(P<const float>(a), P<float>(out), static_cast<size_t>(s.n));
      else if (out != a) std::memcpy(out, a, s.out_bytes());
      break;
    case Op::BatchMatMul:
      if (c) batch_matmul_bias(s.bmm, P<float>(a), P<float>(b), P<float>(c), s.relu, P<float>(out));
      else if (s.gelu_grad) {
        const GeluGradEpilogue ep{s.bop, P<const float>(p.ptr[static_cast<size_t>(s.in[3])])};
        batch_matmul(s.bmm, P<float>(a), P<float>(b), P<float>(out), &ep);
      } else {
        batch_matmul(s.bmm, P<float>(a), P<float>(b), P<float>(out));
      }
      break;
    default:
      throw ArgumentError(std::string("op ") + op_name(s.op) + " is not supported by the CPU executor");
  }
}

void run_fused(const Step& s, Plan& p, const RunContext& ctx) {
  const EwProgram& pr = p.fused[static_cast<size_t>(s.fused)];
  const float* in[kEwMaxInputs];
  float* out[kEwMaxOutputs];
  uint64_t keys[kEwMaxKeys];
  for (size_t i = 0; i < pr.inputs.size(); ++i) in[i] = P<const float>(p.ptr[static_cast<size_t>(pr.inputs[i])]);
  for (size_t i = 0; i < pr.outputs.size(); ++i) out[i] = P<float>(p.ptr[static_cast<size_t>(pr.outputs[i])]);
  for (size_t i = 0; i < pr.streams.size(); ++i) keys[i] = dropout_key(ctx.seed, ctx.rank, pr.streams[i], ctx.call);
  fused_elementwise(pr, in, out, keys);
}

}  // namespace

void execute(plan::Plan& p, const std::vector<Node>& nodes, uint8_t* arena,
             const std::vector<ArrayView>& inputs, void* const* var_ptr, const RunContext& ctx,
             void* const* outputs, const std::function<void(size_t)>* after_step) {
  auto input = [&](int32_t i) { return const_cast<void*>(inputs[static_cast<size_t>(i)].data); };
  exec::bind_pointers(p, exec::BindTo<decltype(input)>{arena, input, var_ptr, p.consts.data(), outputs});
  float* work = reinterpret_cast<float*>(arena + p.work_offset);
  for (size_t si = 0; si < p.steps.size(); ++si) {
    const Step& s = p.steps[si];
    const auto t0 = g_profile.on ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    try {
      if (s.fused >= 0) {
        run_fused(s, p, ctx);
      } else switch (s.op) {
        case Op::Conv2d:
          conv2d(s.conv, static_cast<const float*>(p.ptr[static_cast<size_t>(s.in[0])]),
                 static_cast<const float*>(p.ptr[static_cast<size_t>(s.in[1])]),
                 static_cast<float*>(p.ptr[static_cast<size_t>(s.node)]), work,
                 s.in[2] >= 0 ? static_cast<const float*>(p.ptr[static_cast<size_t>(s.in[2])]) : nullptr, s.relu);
          break;
        case Op::Conv2dGradInput:
          conv2d_grad_input(s.conv, static_cast<const float*>(p.ptr[static_cast<size_t>(s.in[0])]),
                            static_cast<const float*>(p.ptr[static_cast<size_t>(s.in[1])]),
                            static_cast<float*>(p.ptr[static_cast<size_t>(s.node)]), work);
          break;
        case Op::Conv2dGradWeight:
          conv2d_grad_weight(s.conv, static_cast<const float*>(p.ptr[static_cast<size_t>(s.in[0])]),
                             static_cast<const float*>(p.ptr[static_cast<size_t>(s.in[1])]),
                             static_cast<float*>(p.ptr[static_cast<size_t>(s.node)]), work);
          break;
        case Op::Attention:
          attention(s.attn, static_cast<const float*>(p.ptr_of(s.in[0])), static_cast<const float*>(p.ptr_of(s.in[1])),
                    static_cast<const float*>(p.ptr_of(s.in[2])), static_cast<float*>(p.ptr_of(s.node)), work);
          break;
        case Op::AttentionGrad: {
          // Stacked (3): q's, k's and v's gradients one after the other.
          float* o = static_cast<float*>(p.ptr_of(s.node));
          const int64_t nq = s.attn.b * s.attn.h * s.attn.l * s.attn.e;
          const int w = s.attn_which;
          attention_grad(s.attn, static_cast<const float*>(p.ptr_of(s.in[0])),
                         static_cast<const float*>(p.ptr_of(s.in[1])), static_cast<const float*>(p.ptr_of(s.in[2])),
                         static_cast<const float*>(p.ptr_of(s.in[3])), w == 0 || w == 3 ? o : nullptr,
                         w == 1 ? o : w == 3 ? o + nq : nullptr, w == 2 ? o : w == 3 ? o + 2 * nq : nullptr, work);
          break;
        }
        default:
          run_step(s, p, ctx);
      }
    } catch (const Error& e) {
      exec::rethrow_in_step(e, ctx.function, s, "");
    }
    if (g_profile.on) {
      const size_t k = s.fused >= 0 ? OpProfile::kSlots - 1 : static_cast<size_t>(s.op);
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      g_profile.ms[k] += ms;
      g_profile.count[k]++;
      if (g_profile.level == 2 && s.fused < 0 &&
          (s.op == Op::Conv2d || s.op == Op::Conv2dGradInput || s.op == Op::Conv2dGradWeight))
        g_profile.add_conv(s, ms);
    }
    if (after_step) (*after_step)(si);
  }
  (void)nodes;
}

std::vector<int64_t> output_ready_steps(const plan::Plan& p) {
  std::vector<int64_t> ready = plan::output_last_steps(p);
  // Only outputs computed in their own buffer: a buffer shared with another
  // output is filled by the copies after the run.
  for (size_t k = 0; k < ready.size(); ++k) {
    const ValueLoc& l = p.loc[static_cast<size_t>(p.outputs[k])];
    if (!(l.kind == Loc::Output && l.index == static_cast<int32_t>(k))) ready[k] = -1;
  }
  return ready;
}

}  // namespace synk::cpu
