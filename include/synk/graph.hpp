// synk/graph.hpp — the compute graph: symbolic tensors, inputs, shared
// variables and the node IR every executor compiles.
//
// A Graph owns nodes; a Tensor is a typed handle to one node. Ops (see
// synk/ops.hpp) append nodes and check shapes and dtypes at once, so a
// mistake is reported where the graph is built, naming the op and shapes.
//
//   synk::Graph g;
//   auto x = g.input("x", synk::f32, {synk::batch, 784});
//   auto W = g.variable("W", {784, 10}, synk::Init::glorot_uniform());
//   auto y = synk::matmul(x, W);          // Tensor of shape [batch, 10]
//
// Graphs are neither copied nor moved (tensors point at them); build them in
// place and keep them alive while their functions are in use.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "synk/dtype.hpp"

namespace synk {

// Every op of the IR. The order is part of the serialised format: append
// new ops at the end, never reorder.
enum class Op : uint16_t {
  // leaves
  Input,     // name; shape may hold `batch`
  Variable,  // name; ints = {Init::Kind}, floats = {a, b}
  Constant,  // floats = {value}; scalar shape []
  // elementwise binary, numpy broadcasting
  Add, Sub, Mul, Div,
  Equal,  // -> i32 0/1; operands of one dtype
  // elementwise unary
  Neg, Relu, Tanh, Sigmoid, Exp, Log, Sqrt, Square,
  PowScalar,  // floats = {p}
  Cast,       // node dtype is the target
  ReluGrad,   // inputs (y, g): g * (y > 0)
  // reductions: ints = axes (sorted, non-negative), keepdims in Node::flag
  Sum, Mean, Max,
  Argmax,  // ints = {axis}; -> i32, axis removed
  // layout
  Reshape,      // node shape is the target
  Transpose,    // ints = perm
  BroadcastTo,  // node shape is the target; flag = divide by the broadcast
                // factor numel(out)/numel(in) (the gradient of mean)
  // linear algebra: 2-D, ints = {trans_a, trans_b}
  MatMul,
  // nn
  Softmax,     // ints = {axis}
  LogSoftmax,  // ints = {axis}
  SoftmaxCrossEntropy,      // (logits [N,C] f32, labels [N] i32) -> [N]
  SoftmaxCrossEntropyGrad,  // (logits, labels, g [N]) -> [N,C]
  Conv2d,            // (x [N,C,H,W], w [O,C,KH,KW]); ints = {sh, sw, ph, pw}
  Conv2dGradInput,   // (g, w) -> shape of x; ints as Conv2d
  Conv2dGradWeight,  // (x, g) -> shape of w; ints as Conv2d
  MaxPool2d,         // (x); ints = {kh, kw, sh, sw, ph, pw}
  MaxPool2dGrad,     // (x, g) -> shape of x; ints as MaxPool2d
  DropoutMask,       // (x) -> f32 mask of x's shape with values 0 or
                     // 1/(1-p); floats = {p}; ints = {stream}
  // elementwise, f32 unless noted
  Gelu,              // flag = tanh approximation (else the erf form)
  GeluGrad,          // (x, g) -> g * gelu'(x); flag as Gelu
  Abs,
  AbsGrad,           // (x, g) -> g * sign(x), sign(0) = 0
  Maximum, Minimum,  // numpy broadcasting; f32 or i32
  MaximumGradMask,   // (x, y) -> x's share of maximum(x, y)'s gradient:
                     // 1, 1/2 on a tie, 0 where x < y
  Clip,              // floats = {lo, hi}
  ClipMask,          // (x) -> 1 where lo <= x <= hi, else 0; floats = {lo, hi}
  Where,             // (cond i32, a, b) -> a where cond != 0, else b;
                     // all three broadcast; a and b f32 or i32
  Greater, Less,     // -> i32 0/1; operands of one dtype
  Sin, Cos,
  // shape ops (f32 or i32 operands, 4-byte elements)
  Concat,      // (x0, x1, ...) of one dtype; ints = {axis}
  Slice,       // (x); ints = {axis, begin, end}, 0 <= begin <= end <= dim
  SliceGrad,   // (g) -> node shape (x's): g at [begin, end) of axis, zeros
               // elsewhere; ints as Slice
  Embedding,      // (table [V, D] f32, indices i32 [...]) -> [..., D]
  EmbeddingGrad,  // (g [..., D], indices) -> [V, D]: g's rows added up
                  // at their indices (scatter-add)
  // (a [..., m, k], b [..., k, n]) -> [..., m, n]; ints = {trans_a, trans_b}.
  // The operands' batch dims broadcast like numpy; the node's batch dims
  // are that broadcast shape, or one it sums down to as a broadcast
  // operand's gradient does (leading dims dropped, others 1).
  BatchMatMul,
  // normalisation (synk/ops.hpp: layer_norm, batch_norm)
  LayerNorm,      // (x [.., D]) -> x normalised over the last axis; with
                  // (x, gamma [D], beta [D]) the affine is applied too;
                  // floats = {eps}
  LayerNormGrad,  // (x, gamma [D], dy) -> dx; floats = {eps}
  BatchNormVar,   // (x [N,C,...], mean [C]) -> biased variance [C] over all
                  // axes but 1
  BatchNorm,      // (x, mean [C], var [C]) -> (x - mean) / sqrt(var + eps)
                  // per channel (axis 1); with (.., gamma, beta) the affine
                  // too; floats = {eps}
  BatchNormGrad,  // (x, mean, var, gamma, dy[, sums]) -> dx; floats =
                  // {eps}; flag: mean/var are x's batch statistics
                  // (training), else constants (evaluation); sums (training
                  // only): BatchNormGradSums of the same operands, so its
                  // pass over x and dy is not repeated
  BatchNormRunningVar,  // (running_var [C], var [C], x) -> (1 - m) *
                        // running_var + m * var * M / (M - 1), M = values
                        // per channel of x; floats = {m}
  AvgPool2d,      // (x); ints = {kh, kw, sh, sw, ph, pw}; padding counts
  AvgPool2dGrad,  // (g) -> shape of x; ints as AvgPool2d; node shape is x's
  BatchNormGradGamma,  // (x, mean, var, dy) -> [C]: sum of dy * xhat per
                       // channel (gamma's gradient); floats = {eps}
  // across ranks (synk/ops.hpp: rank_sum)
  RankSum,  // (x f32, no batch dim) -> the elementwise sum of x over every
            // rank running the function; x itself in a lone session
  BatchNormGradSums,   // (x, mean, var, dy) -> [2, C]: per channel sum of dy
                       // (beta's gradient), then of dy * xhat (gamma's), in
                       // one pass; floats = {eps}
  // (q, k, v) -> softmax(q k^T * scale) v per (batch, head) (synk/ops.hpp:
  // scaled_dot_product_attention); ints = {layout: 0 heads first
  // [..., L, E], 1 tokens first [N, L, H, E]}; floats = {scale}
  Attention,
  // (q, k, v, dy) -> the gradient of q (ints[1] = 0), k (1) or v (2), or of
  // all three stacked as [3, ...] (3; q, k and v of one shape); ints[0] and
  // floats as Attention
  AttentionGrad,
  kCount
};
const char* op_name(Op op);

// How a shared variable is first filled. Values come from a seeded RNG so
// every process that builds the same graph with the same seed agrees.
struct Init {
  enum Kind : uint8_t {
    kZeros = 0, kConstant, kUniform, kNormal, kGlorotUniform, kGlorotNormal
  };
  Kind kind = kZeros;
  float a = 0, b = 0;  // constant: a; uniform: [a, b); normal: mean a, std b;
                       // glorot: gain a
  static Init zeros() { return {kZeros, 0, 0}; }
  static Init constant(float v) { return {kConstant, v, 0}; }
  static Init uniform(float lo, float hi) { return {kUniform, lo, hi}; }
  static Init normal(float mean, float std) { return {kNormal, mean, std}; }
  static Init glorot_uniform(float gain = 1.f) { return {kGlorotUniform, gain, 0}; }
  static Init glorot_normal(float gain = 1.f) { return {kGlorotNormal, gain, 0}; }
};

// One node of the IR. Plain data: the serialiser writes it field by field.
struct Node {
  Op op = Op::Constant;
  DType dtype = DType::f32;
  bool flag = false;           // keepdims for reductions; see BroadcastTo, Gelu
  Shape shape;                 // may hold `batch`
  std::vector<int32_t> inputs; // ids of earlier nodes
  std::vector<int64_t> ints;   // op attributes, see Op
  std::vector<float> floats;   // op attributes, see Op
  std::string name;            // inputs and variables
};

class Graph;

// A symbolic tensor: a handle to one node of a graph. Cheap to copy.
class Tensor {
 public:
  Tensor() = default;
  Tensor(Graph* g, int32_t id) : g_(g), id_(id) {}
  bool valid() const { return g_ != nullptr; }
  Graph& graph() const;
  int32_t id() const { return id_; }
  const Node& node() const;
  // By value: building more ops may move the graph's node storage, so a
  // reference would dangle in expressions like `f(a + b, a.shape())`.
  Shape shape() const { return node().shape; }
  DType dtype() const { return node().dtype; }
  int ndim() const { return static_cast<int>(node().shape.size()); }
  std::string name() const { return node().name; }
  bool operator==(const Tensor& o) const { return g_ == o.g_ && id_ == o.id_; }

 private:
  Graph* g_ = nullptr;
  int32_t id_ = -1;
};

struct Update {
  Tensor variable;  // a Graph::variable
  Tensor value;     // same shape and dtype; applied after all outputs
};

class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // A function input. Names are unique among inputs and variables.
  Tensor input(const std::string& name, DType dtype, Shape shape);
  // A named shared variable (f32 or i32), filled by `init` at first use.
  // Its shape is concrete (no `batch`).
  Tensor variable(const std::string& name, Shape shape, Init init = Init::zeros(),
                  DType dtype = DType::f32);
  // A scalar constant (shape []), broadcastable against anything. An i32
  // constant must be a whole number in i32's range (TypeError otherwise:
  // never truncated).
  Tensor constant(float value, DType dtype = DType::f32);

  // Looks up an input or variable by name; throws ArgumentError if unknown.
  Tensor find(const std::string& name);
  bool contains(const std::string& name) const { return names_.count(name) != 0; }
  // Variables in creation order.
  std::vector<Tensor> variables();

  const std::vector<Node>& nodes() const { return nodes_; }
  const Node& node(int32_t id) const { return nodes_.at(static_cast<size_t>(id)); }
  size_t size() const { return nodes_.size(); }
  Tensor tensor(int32_t id);

  // Appends a node after checking its inputs belong to this graph. Shape
  // inference is done by the callers (synk/ops.hpp); this is the raw IR
  // entry point used by them, by autodiff and by the deserialiser.
  Tensor add_node(Node n);

  // Next id for a DropoutMask stream (each mask draws its own numbers).
  int64_t next_stream() { return streams_++; }

  // A state update: an Update of a variable that every function computing
  // `trigger` applies without being asked (batch_norm's running statistics
  // in training mode). make_function_def appends the updates whose trigger
  // the function computes (reachable from its outputs or its updates'
  // values), except those of a variable the function already updates.
  // Throws ArgumentError if the tensors are not of this graph or the update
  // does not fit its variable.
  void add_state_update(Tensor trigger, Update u);
  struct StateUpdate {
    int32_t trigger, variable, value;
  };
  const std::vector<StateUpdate>& state_updates() const { return state_updates_; }

 private:
  std::vector<Node> nodes_;
  std::unordered_map<std::string, int32_t> names_;
  int64_t streams_ = 0;
  std::vector<StateUpdate> state_updates_;
  friend class GraphAccess;
};

// How a Runtime combines a function output over the pieces of one call. A
// piece is one rank's share of the rows, or one slice of it with
// CallOptions::num_slices; a rank with no rows gives no piece, and with no
// scattered input every rank gives one. In a single process (Session) the
// output is the value itself, whatever the mode.
//   avg    the pieces' mean weighted by their rows: for an output that is a
//          mean over its rows (a loss), the mean over all the call's rows,
//          whatever the rank count. With no scattered input, the plain mean
//          over the ranks.
//   sum, max, min, prod
//          element by element over the pieces: for an output that is itself
//          a sum (max, min, product) over its rows, the one over all rows.
//          An output that does not depend on the rows (e.g. a variable's
//          norm) is counted once per piece: sum gives pieces x value.
//   gather an output with a batch dim: every row, in batch order, exactly
//          the array one process would return. An output without one: one
//          value per piece stacked in rank (then slice) order, shape
//          [pieces, ...shape].
//   none   rank 0's first piece as it is (for a value every rank computes
//          the same; the other pieces are ignored).
// Runtime::function refuses an output with a batch dim under any mode but
// gather: its result would depend on how the rows were split.
enum class Collect : uint8_t { avg = 0, sum, max, min, prod, gather, none };
const char* collect_name(Collect c);

struct OutputSpec {
  OutputSpec(Tensor v, Collect c = Collect::avg) : value(v), collect(c) {}
  Tensor value;
  Collect collect = Collect::avg;
};


// What a user asks for when making a function.
struct FunctionSpec {
  std::string name;
  std::vector<Tensor> inputs;
  std::vector<OutputSpec> outputs;
  std::vector<Update> updates;
};

// The index form of a function, as executors and the serialiser see it.
struct FunctionDef {
  std::string name;
  std::vector<int32_t> inputs;
  std::vector<int32_t> outputs;
  std::vector<Collect> collects;  // one per output
  std::vector<std::pair<int32_t, int32_t>> updates;  // (variable, value)
};

// Checks a spec against its graph (inputs are Input nodes, updates target
// variables with matching shape/dtype, everything from one graph) and
// returns the index form, with the graph's state updates it triggers
// appended (Graph::add_state_update). Throws ArgumentError naming the
// problem.
FunctionDef make_function_def(const FunctionSpec& spec);

// Checks a FunctionDef against a graph (ids in range, kinds right); used on
// deserialised functions. Throws ArgumentError (the deserialiser turns it
// into FormatError).
void validate_function_def(const std::vector<Node>& nodes, const FunctionDef& f);

// Whether computing f's outputs and updates runs a node of kind `op` (e.g.
// Op::RankSum: the function combines values across ranks mid-way).
bool function_runs_op(const Graph& g, const FunctionDef& f, Op op);

// Fills `out` (numel(shape) elements) with a variable's initial value,
// deterministically from (seed, node id).
void initial_value(const Node& var, int32_t id, uint64_t seed, void* out);

}  // namespace synk
