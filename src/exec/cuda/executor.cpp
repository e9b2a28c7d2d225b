// exec/cuda/executor.cpp — device layout of a compiled plan and the
// enqueueing of its steps: each step of the CPU planner's schedule becomes
// cuBLAS calls and/or kernels from kernels/ on one stream, with no host
// synchronisation (so the whole call can be captured as a CUDA graph). The
// kernels take the plan's op kinds and geometry as they are.
//
// Convolution is im2col + cuBLAS over chunks of images: forward and input
// gradient as strided-batched GEMMs per image (the output lands in NCHW
// directly), the weight gradient as one GEMM per chunk over a column matrix
// laid out [K][images*P] against the output gradient packed [O][images*P].
#include "synk/config.hpp"

#if SYNK_HAVE_CUDA

#include "exec/cuda/executor.hpp"

#include <algorithm>
#include <cstring>

#include "dropout_bits.hpp"  // kernels/
#include "exec/common.hpp"
#include "ops.cuh"
#include "synk/error.hpp"

namespace synk::cuda {

namespace {

constexpr int64_t kAlign = 256;
// Upper bound on the im2col workspace of one conv step (floats); the chunk
// of images shrinks to fit, down to one image.
constexpr int64_t kConvBudgetFloats = int64_t{64} << 20;

int64_t align_up(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

// Floats of workspace per image of a conv step.
int64_t conv_floats_per_image(const plan::Step& s) {
  const plan::ConvGeom& g = s.conv;
  const int64_t K = g.k(), P = g.p();
  switch (s.op) {
    case Op::Conv2d: case Op::Conv2dGradInput: return g.identity_cols() ? 0 : K * P;
    case Op::Conv2dGradWeight: return (K + g.o) * P;
    default: return 0;
  }
}

template <class T> T* P(void* p) { return static_cast<T*>(p); }

void conv_forward(const plan::Step& s, int64_t chunk, const float* x, const float* w, float* y, float* work,
                  const float* bias, const ExecContext& cx) {
  const plan::ConvGeom& g = s.conv;
    const int64_t K = g.k(), Pn = g.p(), img = g.c * g.h * g.w;
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t cnt = std::min(chunk, g.n - n0);
    const float* col = x + n0 * img;
    int64_t col_stride = img;  // identity columns: the image is its column matrix
    if (!g.identity_cols()) {
      kernels::im2col(g, cnt, x + n0 * img, work, K * Pn, Pn, cx.stream);
      SYNK_CUDA_CHECK(cudaGetLastError());
      col = work;
      col_stride = K * Pn;
    }
    // y_i[O,P] = W[O,K] col_i[K,P]
    cx.blas->gemm_batched(false, false, g.o, Pn, K, w, K, 0, col, Pn, col_stride, y + n0 * g.o * Pn, Pn,
                          g.o * Pn, cnt);
  }
  if (bias || s.relu) kernels::bias_relu_rows(g.n * g.o, Pn, bias, g.o, s.relu, y, cx.stream);
}

void conv_grad_input(const plan::Step& s, int64_t chunk, const float* dy, const float* w, float* dx, float* work,
                     const ExecContext& cx) {
  const plan::ConvGeom& g = s.conv;
    const int64_t K = g.k(), Pn = g.p(), img = g.c * g.h * g.w;
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t cnt = std::min(chunk, g.n - n0);
    // dcol_i[K,P] = W^T[K,O] dy_i[O,P]
    if (g.identity_cols()) {
      cx.blas->gemm_batched(true, false, K, Pn, g.o, w, K, 0, dy + n0 * g.o * Pn, Pn, g.o * Pn, dx + n0 * img, Pn,
                            img, cnt);
      continue;
    }
    cx.blas->gemm_batched(true, false, K, Pn, g.o, w, K, 0, dy + n0 * g.o * Pn, Pn, g.o * Pn, work, Pn, K * Pn, cnt);
    kernels::col2im(g, cnt, work, dx + n0 * img, cx.stream);
    SYNK_CUDA_CHECK(cudaGetLastError());
  }
  if (g.n > 0 && (K == 0 || Pn == 0) && img > 0)
    SYNK_CUDA_CHECK(cudaMemsetAsync(dx, 0, static_cast<size_t>(g.n * img) * sizeof(float), cx.stream));
}

void conv_grad_weight(const plan::Step& s, int64_t chunk, const float* x, const float* dy, float* dw, float* work,
                      const ExecContext& cx) {
  const plan::ConvGeom& g = s.conv;
    const int64_t K = g.k(), Pn = g.p(), img = g.c * g.h * g.w;
  if (g.n == 0 || Pn == 0) {
    if (g.o * K > 0) SYNK_CUDA_CHECK(cudaMemsetAsync(dw, 0, static_cast<size_t>(g.o * K) * sizeof(float), cx.stream));
    return;
  }
  float* dyp = work + K * chunk * Pn;  // after the largest column matrix
  for (int64_t n0 = 0; n0 < g.n; n0 += chunk) {
    const int64_t cnt = std::min(chunk, g.n - n0);
    const int64_t wide = cnt * Pn;
    kernels::im2col(g, cnt, x + n0 * img, work, Pn, wide, cx.stream);  // [K][cnt*P]
    SYNK_CUDA_CHECK(cudaGetLastError());
    kernels::pack_channels(cnt, g.o, Pn, dy + n0 * g.o * Pn, dyp, cx.stream);  // [O][cnt*P]
    SYNK_CUDA_CHECK(cudaGetLastError());
    // dW[O,K] (+)= dy[O, cnt*P] col[K, cnt*P]^T
    cx.blas->gemm(false, true, g.o, K, wide, dyp, wide, work, wide, n0 == 0 ? 0.f : 1.f, dw, K);
  }
}

// The batched product of BatchGeom: one GEMM where the batch folds; else
// strided-batched GEMMs over the innermost batch dim (stride 0 for a
// broadcast operand), one call per index of the outer dims; an output that
// sums batch dims is zeroed, then every product added into it by one GEMM
// each (cuBLAS's batched calls may not write one matrix twice).
void batch_matmul(const plan::BatchGeom& g, const float* a, const float* b, float* c, const ExecContext& cx) {
  if (g.m == 0 || g.n == 0) return;
  const Blas& blas = *cx.blas;
  if (g.fold == 1) {
    blas.gemm(false, g.tb, g.count * g.m, g.n, g.k, a, g.k, b, g.ldb(), 0.f, c, g.n);
    return;
  }
  if (g.fold == 2) {
    blas.gemm(true, false, g.m, g.n, g.count * g.k, a, g.m, b, g.n, 0.f, c, g.n);
    return;
  }
  const bool sum = g.summed();
  if (sum && g.out_count > 0)
    SYNK_CUDA_CHECK(cudaMemsetAsync(c, 0, static_cast<size_t>(g.out_count * g.m * g.n) * sizeof(float), cx.stream));
  if (g.count == 0) return;
  // The innermost dim runs as one strided-batched call (no sums); the
  // others by an odometer.
  const int inner = g.nd - 1;
  const int64_t per_call = !sum && g.nd > 0 ? g.dim[inner] : 1;
  const int outer_nd = !sum && g.nd > 0 ? g.nd - 1 : g.nd;
  int64_t idx[plan::kMaxDims] = {};
  int64_t oa = 0, ob = 0, oc = 0;
  for (int64_t i = 0; i < g.count; i += per_call) {
    if (sum)
      blas.gemm(g.ta, g.tb, g.m, g.n, g.k, a + oa, g.lda(), b + ob, g.ldb(), 1.f, c + oc, g.n);
    else
      blas.gemm_batched(g.ta, g.tb, g.m, g.n, g.k, a + oa, g.lda(), g.nd > 0 ? g.sa[inner] : 0, b + ob, g.ldb(),
                        g.nd > 0 ? g.sb[inner] : 0, c + oc, g.n, g.m * g.n, per_call);
    g.advance(outer_nd, idx, oa, ob, oc);
  }
}

void run_step(const plan::Step& s, size_t si, CudaPlan& cp, const ExecContext& cx) {
  auto ptr = [&](int32_t id) -> void* { return id >= 0 ? cp.p.ptr[static_cast<size_t>(id)] : nullptr; };
  void* out = ptr(s.node);
  void* a = ptr(s.in[0]);
  void* b = ptr(s.in[1]);
  void* c = ptr(s.in[2]);
  cudaStream_t st = cx.stream;
  float* work = reinterpret_cast<float*>(cx.arena + cp.work_offset);
  switch (s.family) {
    case plan::Family::Binary:
      if (ew::is_compare(s.bop) && s.in_dtype == DType::f32)
        kernels::compare_f32(s.bop, s.st, P<float>(a), P<float>(b), P<int32_t>(out), st);
      else if (s.dtype == DType::f32) kernels::binary_f32(s.bop, s.st, P<float>(a), P<float>(b), P<float>(out), st);
      else kernels::binary_i32(s.bop, s.st, P<int32_t>(a), P<int32_t>(b), P<int32_t>(out), st);
      break;
    case plan::Family::Unary:
      if (s.dtype == DType::i32 && s.uop == plan::UnOp::Neg) kernels::neg_i32(s.n, P<int32_t>(a), P<int32_t>(out), st);
      else if (s.dtype != DType::f32) throw TypeError(std::string(op_name(s.op)) + " needs f32 operands");
      else kernels::unary_f32(s.uop, s.n, P<float>(a), P<float>(out), s.f, s.f2, st);
      break;
    case plan::Family::Ternary:
      if (s.dtype == DType::f32) kernels::where_f32(s.st, P<int32_t>(a), P<float>(b), P<float>(c), P<float>(out), st);
      else kernels::where_i32(s.st, P<int32_t>(a), P<int32_t>(b), P<int32_t>(c), P<int32_t>(out), st);
      break;
    case plan::Family::ByOp:
      break;
  }
  if (s.family == plan::Family::ByOp) switch (s.op) {
    case Op::Cast:
      if (s.in_dtype == s.dtype) {
        if (out != a && s.n > 0)
          SYNK_CUDA_CHECK(cudaMemcpyAsync(out, a, s.out_bytes(), cudaMemcpyDeviceToDevice, st));
      } else if (s.dtype == DType::i32) {
        kernels::cast_f32_i32(s.n, P<float>(a), P<int32_t>(out), st);
      } else {
        kernels::cast_i32_f32(s.n, P<int32_t>(a), P<float>(out), st);
      }
      break;
    case Op::Sum: case Op::Mean: case Op::Max: {
      if (s.dtype == DType::f32) {
        const float inv = s.red.in_numel > 0
            ? static_cast<float>(static_cast<double>(s.red.out_numel) / static_cast<double>(s.red.in_numel))
            : 1.f;
        kernels::reduce_f32(s.rop, s.red, inv, P<float>(a), P<float>(out), st);
      } else {
        kernels::reduce_i32(s.rop, s.red, P<int32_t>(a), P<int32_t>(out), st);
      }
      break;
    }
    case Op::Argmax:
      if (s.in_dtype == DType::f32) kernels::argmax_f32(s.ax, P<float>(a), P<int32_t>(out), st);
      else kernels::argmax_i32(s.ax, P<int32_t>(a), P<int32_t>(out), st);
      break;
    case Op::Transpose:
      kernels::strided_copy(s.st, P<uint32_t>(a), P<uint32_t>(out), false, 1.f, st);
      break;
    case Op::BroadcastTo:
      kernels::strided_copy(s.st, P<uint32_t>(a), P<uint32_t>(out), s.f != 1.f, s.f, st);
      break;
    case Op::MatMul:
      cx.blas->gemm(s.ta, s.tb, s.mm_m, s.mm_n, s.mm_k, P<float>(a), s.ta ? s.mm_m : s.mm_k, P<float>(b),
                    s.tb ? s.mm_k : s.mm_n, 0.f, P<float>(out), s.mm_n);
      if (c || s.relu) kernels::bias_relu_cols(s.mm_m, s.mm_n, P<float>(c), s.relu, P<float>(out), st);
      break;
    case Op::Softmax: case Op::LogSoftmax:
      kernels::softmax(s.ax, P<float>(a), P<float>(out), s.op == Op::LogSoftmax, st);
      break;
    case Op::SoftmaxCrossEntropy:
      kernels::softmax_xent(s.mm_m, s.mm_n, P<float>(a), P<int32_t>(b), P<float>(out), cx.bad_row, st);
      break;
    case Op::SoftmaxCrossEntropyGrad:
      kernels::softmax_xent_grad(s.mm_m, s.mm_n, P<float>(a), P<int32_t>(b), P<float>(c), P<float>(out), cx.bad_row, st);
      break;
    case Op::Conv2d:
      conv_forward(s, cp.conv_chunk[si], P<float>(a), P<float>(b), P<float>(out), work, P<float>(c), cx);
      break;
    case Op::Conv2dGradInput:
      conv_grad_input(s, cp.conv_chunk[si], P<float>(a), P<float>(b), P<float>(out), work, cx);
      break;
    case Op::Conv2dGradWeight:
      conv_grad_weight(s, cp.conv_chunk[si], P<float>(a), P<float>(b), P<float>(out), work, cx);
      break;
    case Op::MaxPool2d:
      kernels::max_pool2d(s.pool, P<float>(a), P<float>(out), st);
      break;
    case Op::MaxPool2dGrad:
      kernels::max_pool2d_grad(s.pool, P<float>(a), P<float>(b), P<float>(out), st);
      break;
    case Op::RankSum:
      if (cx.rank_sum && *cx.rank_sum) (*cx.rank_sum)(P<const float>(a), P<float>(out), static_cast<size_t>(s.n), st);
      else if (out != a) SYNK_CUDA_CHECK(cudaMemcpyAsync(out, a, s.out_bytes(), cudaMemcpyDeviceToDevice, st));
      break;
    case Op::AvgPool2d:
      kernels::avg_pool2d(s.pool, P<float>(a), P<float>(out), st);
      break;
    case Op::AvgPool2dGrad:
      kernels::avg_pool2d_grad(s.pool, P<float>(a), P<float>(out), st);
      break;
    case Op::Attention:
      kernels::attention(s.attn, P<float>(a), P<float>(b), P<float>(c), P<float>(out), st);
      break;
    case Op::AttentionGrad: {
      // Stacked (3): q's, k's and v's gradients one after the other.
      float* o = P<float>(out);
      const int64_t nq = s.attn.b * s.attn.h * s.attn.l * s.attn.e;
      const int w = s.attn_which;
      kernels::attention_grad(s.attn, P<float>(a), P<float>(b), P<float>(c), P<float>(ptr(s.in[3])),
                              w == 0 || w == 3 ? o : nullptr, w == 1 ? o : w == 3 ? o + nq : nullptr,
                              w == 2 ? o : w == 3 ? o + 2 * nq : nullptr, st);
      break;
    }
    case Op::LayerNorm:
      kernels::layer_norm(s.ax, P<float>(a), P<float>(b), P<float>(c), s.f, P<float>(out), st);
      break;
    case Op::LayerNormGrad:
      kernels::layer_norm_grad(s.ax, P<float>(a), P<float>(b), P<float>(c), s.f, P<float>(out), st);
      break;
    case Op::BatchNormVar:
      kernels::batch_norm_var(s.ax, P<float>(a), P<float>(b), P<float>(out), st);
      break;
    case Op::BatchNorm:
      kernels::batch_norm(s.ax, P<float>(a), P<float>(b), P<float>(c), P<float>(ptr(s.in[3])), P<float>(ptr(s.in[4])),
                          s.f, P<float>(out), st);
      break;
    case Op::BatchNormGrad:
      kernels::batch_norm_grad(s.ax, P<float>(a), P<float>(b), P<float>(c), P<float>(ptr(s.in[3])),
                               P<float>(ptr(s.in[4])), s.f, s.training, P<float>(out), st,
                               s.in[5] >= 0 ? P<float>(ptr(s.in[5])) : nullptr);
      break;
    case Op::BatchNormGradGamma:
      kernels::batch_norm_grad_gamma(s.ax, P<float>(a), P<float>(b), P<float>(c), P<float>(ptr(s.in[3])), s.f,
                                     P<float>(out), st);
      break;
    case Op::BatchNormGradSums:
      kernels::batch_norm_grad_sums(s.ax, P<float>(a), P<float>(b), P<float>(c), P<float>(ptr(s.in[3])), s.f,
                                    P<float>(out), st);
      break;
    case Op::BatchNormRunningVar:
      kernels::batch_norm_running_var(s.ax, P<float>(a), P<float>(b), s.f, P<float>(out), st);
      break;
    case Op::DropoutMask: {
      const float p = s.f;
      if (!(p > 0.f)) {
        kernels::fill(s.n, 1.f, P<float>(out), st);
      } else if (p >= 1.f) {
        kernels::fill(s.n, 0.f, P<float>(out), st);
      } else {
        const dropout::Params dp = dropout::params(p);
        kernels::dropout_mask(s.n, dp.thr, dp.scale, cp.dropout_key[si], cx.counter, P<float>(out), st);
      }
      break;
    }
    case Op::Slice:
      kernels::slice_copy(s.slice, P<uint32_t>(a), P<uint32_t>(out), st);
      break;
    case Op::SliceGrad:
      kernels::slice_place(s.slice, P<uint32_t>(a), P<uint32_t>(out), true, st);
      break;
    case Op::Concat:
      for (size_t i = 0; i < s.parts.size(); ++i) {
        plan::SliceGeom part = s.slice;
        part.begin = s.part_at[i];
        part.end = s.part_at[i + 1];
        kernels::slice_place(part, P<uint32_t>(ptr(s.parts[i])), P<uint32_t>(out), false, st);
      }
      break;
    case Op::Embedding: case Op::EmbeddingGrad: {
      auto* bad = static_cast<unsigned long long*>(cp.index_check.data()) + cp.index_slot[si];
      if (s.op == Op::Embedding) {
        kernels::embedding(s.mm_m, s.mm_n, s.mm_k, P<float>(a), P<int32_t>(b), P<float>(out), bad, st);
      } else {
        if (s.n > 0) SYNK_CUDA_CHECK(cudaMemsetAsync(out, 0, s.out_bytes(), st));
        kernels::embedding_grad_add(s.mm_m, s.mm_n, s.mm_k, P<float>(a), P<int32_t>(b), P<float>(out), bad, st);
      }
      break;
    }
    case Op::BatchMatMul:
      batch_matmul(s.bmm, P<float>(a), P<float>(b), P<float>(out), cx);
      if (c || s.relu)
        kernels::bias_relu_cols(s.bmm.out_count * s.bmm.m, s.bmm.n, P<float>(c), s.relu, P<float>(out), st);
      break;
    default:
      throw ArgumentError(std::string("op ") + op_name(s.op) + " is not supported by the CUDA executor");
  }
  SYNK_CUDA_CHECK(cudaGetLastError());
  if (cx.sync_each_step) SYNK_CUDA_CHECK(cudaStreamSynchronize(st));
}

}  // namespace

plan::CompileOptions plan_options() {
  plan::CompileOptions o = plan::default_compile_options();
  o.fuse_elementwise = false;
  o.fuse_norm_relu = false;
  o.fuse_matmul_gelu_grad = false;
  o.outputs_external = false;
  return o;
}

CudaPlan make_cuda_plan(plan::Plan p, const std::vector<Node>& nodes, const FunctionDef& def, uint64_t seed,
                        int rank, cudaStream_t stream) {
  CudaPlan cp;
  cp.p = std::move(p);
  const plan::Plan& q = cp.p;
  // Steps and locations only the CPU executor runs (plan_options() turns
  // them off): refuse them here rather than run a wrong call.
  bool cpu_only = !q.fused.empty();
  for (const plan::Step& s : q.steps)
    cpu_only = cpu_only || s.fused >= 0 || (s.op == Op::BatchNorm && s.relu) || s.gelu_grad;
  for (const plan::ValueLoc& l : q.loc) cpu_only = cpu_only || l.kind == plan::Loc::Output;
  if (cpu_only)
    throw BackendError("function '" + def.name +
                       "': the CUDA executor got a plan with fused elementwise groups, a ReLU folded into a batch norm, "
                       "GELU's gradient folded into a product or outputs in caller buffers, which only the CPU executor runs (compile with "
                       "cuda::plan_options())");
  const size_t nsteps = q.steps.size();
  cp.index_slot.assign(nsteps, -1);
  cp.conv_chunk.assign(nsteps, 1);
  cp.dropout_key.assign(nsteps, 0);
  int64_t work_floats = 0;
  for (size_t si = 0; si < nsteps; ++si) {
    const plan::Step& s = q.steps[si];
    if (s.op == Op::Conv2d || s.op == Op::Conv2dGradInput || s.op == Op::Conv2dGradWeight) {
      const int64_t per = conv_floats_per_image(s);
      int64_t chunk = std::max<int64_t>(s.conv.n, 1);
      if (per > 0) chunk = std::clamp<int64_t>(kConvBudgetFloats / per, 1, chunk);
      cp.conv_chunk[si] = chunk;
      work_floats = std::max(work_floats, chunk * per);
    }
    if (s.op == Op::DropoutMask) cp.dropout_key[si] = dropout::key_base(seed, rank, s.stream);
    if (s.op == Op::SoftmaxCrossEntropy || s.op == Op::SoftmaxCrossEntropyGrad) cp.has_xent = true;
    if (s.op == Op::RankSum) cp.has_rank_sum = true;
    if (s.op == Op::Embedding || s.op == Op::EmbeddingGrad) {
      cp.index_slot[si] = static_cast<int32_t>(cp.index_steps.size());
      cp.index_steps.push_back(si);
    }
  }
  if (!cp.index_steps.empty()) {
    // All ones: no bad index (shape::kNoBadIndex), on the plan's stream.
    cp.index_check = DeviceBuffer(cp.index_steps.size() * sizeof(unsigned long long));
    SYNK_CUDA_CHECK(cudaMemsetAsync(cp.index_check.data(), 0xff, cp.index_check.bytes(), stream));
  }

  // Arena: the planner's values, then the conv workspace, staging for
  // update values read from overwritten variables, output snapshots, and
  // the input slots.
  int64_t top = align_up(q.work_offset);
  cp.work_offset = top;
  top = align_up(top + work_floats * static_cast<int64_t>(sizeof(float)));
  cp.stage_offset = plan::stage_updates(q, nodes, top, kAlign);
  std::vector<char> target(nodes.size(), 0);
  for (const auto& c : q.copies) target[static_cast<size_t>(c.var)] = 1;
  // An output held in a variable that an update copy overwrites must be
  // read before the copy: snapshot it (the CPU copies outputs out first).
  cp.snapshot_offset.assign(q.outputs.size(), -1);
  for (size_t i = 0; i < q.outputs.size(); ++i) {
    const int32_t id = q.outputs[i];
    const plan::ValueLoc& l = q.loc[static_cast<size_t>(id)];
    if (l.kind == plan::Loc::Variable && target[static_cast<size_t>(l.index)]) {
      cp.snapshot_offset[i] = top;
      top = align_up(top + q.bytes(id));
    }
  }
  // A slot for each input the plan reads. The planner resolves shapes of
  // needed nodes only: an input no output or update uses keeps an empty
  // shape there, gets no slot and is never copied.
  cp.input_offset.assign(def.inputs.size(), -1);
  cp.input_bytes.assign(def.inputs.size(), 0);
  for (size_t i = 0; i < def.inputs.size(); ++i) {
    const int32_t id = def.inputs[i];
    const plan::ValueLoc& l = q.loc[static_cast<size_t>(id)];
    if (l.kind != plan::Loc::Input || l.index != static_cast<int32_t>(i)) continue;
    cp.input_offset[i] = top;
    cp.input_bytes[i] = q.bytes(id);
    top = align_up(top + cp.input_bytes[i]);
  }
  cp.arena_bytes = std::max<int64_t>(top, kAlign);

  if (!q.consts.empty()) {
    // On the plan's stream: a non-blocking stream does not wait for the
    // legacy stream a plain cudaMemcpy would use (and whose DMA from
    // pageable memory may still run when it returns). q.consts lives as
    // long as the plan.
    cp.consts = DeviceBuffer(q.consts.size() * sizeof(uint32_t));
    SYNK_CUDA_CHECK(cudaMemcpyAsync(cp.consts.data(), q.consts.data(), cp.consts.bytes(), cudaMemcpyHostToDevice,
                                    stream));
  }
  return cp;
}

void bind(CudaPlan& cp, uint8_t* arena, void* const* var_ptr) {
  // Inputs are copied into their arena slots; CUDA plans never compile
  // outputs_external (no Loc::Output).
  auto input = [&](int32_t i) -> void* { return arena + cp.input_offset[static_cast<size_t>(i)]; };
  exec::bind_pointers(cp.p, exec::BindTo<decltype(input)>{arena, input, var_ptr,
                                                          static_cast<uint32_t*>(cp.consts.data()), nullptr});
}

void enqueue_steps(CudaPlan& cp, const ExecContext& cx, size_t first, size_t end) {
  plan::Plan& p = cp.p;
  for (size_t si = first; si < end && si < p.steps.size(); ++si) {
    const plan::Step& s = p.steps[si];
    try {
      run_step(s, si, cp, cx);
    } catch (const Error& e) {
      exec::rethrow_in_step(e, cx.function, s, " on the GPU");
    }
  }
  SYNK_CUDA_CHECK(cudaGetLastError());
}

void enqueue_tail(CudaPlan& cp, const std::vector<Node>& nodes, const ExecContext& cx) {
  plan::Plan& p = cp.p;
  // Outputs the update copies below would overwrite.
  for (size_t i = 0; i < p.outputs.size(); ++i) {
    if (cp.snapshot_offset[i] < 0) continue;
    const int32_t id = p.outputs[i];
    const size_t bytes = static_cast<size_t>(p.bytes(id));
    if (bytes > 0)
      SYNK_CUDA_CHECK(cudaMemcpyAsync(cx.arena + cp.snapshot_offset[i], p.ptr[static_cast<size_t>(id)], bytes,
                                      cudaMemcpyDeviceToDevice, cx.stream));
  }
  // Updates (plan/plan.hpp: staged values first, then the copies).
  plan::apply_updates(p, nodes, cp.stage_offset, cx.arena, p.ptr.data(), [&](void* dst, const void* src, size_t n) {
    SYNK_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cx.stream));
  });
  SYNK_CUDA_CHECK(cudaGetLastError());
  if (cx.sync_each_step) SYNK_CUDA_CHECK(cudaStreamSynchronize(cx.stream));
}

void enqueue(CudaPlan& cp, const std::vector<Node>& nodes, const ExecContext& cx) {
  enqueue_steps(cp, cx, 0, cp.p.steps.size());
  enqueue_tail(cp, nodes, cx);
}

}  // namespace synk::cuda

#endif  // SYNK_HAVE_CUDA
