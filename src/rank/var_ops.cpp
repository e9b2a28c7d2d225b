// src/rank/var_ops.cpp — collectives on shared variables as every rank runs
// them: each rank's copy, in its executor's memory, moved by its comm.
#include "rank/rank.hpp"
#include "trace/trace.hpp"
#include "wire/wire.hpp"

namespace synk::detail {

void run_var_ops(RankState& L, const uint8_t* args, size_t n, uint8_t* out) {
  if (!L.ready() || !L.comm) throw BackendError("collective before distribute");
  trace::Span span(trace::Kind::collective);
  comm::Comm& comm = *L.comm;
  exec::Executor& ex = *L.ex;
  const auto stream = ex.stream();
  size_t out_off = 0;
  for (const VarOp& o : decode_var_ops(args, n)) {
    const VarOpKind kind = o.kind;
    const int32_t root = o.root, var = o.var;
    // Validate against the graph before acting (a corrupt command must not reach memory).
    if (var < 0 || static_cast<size_t>(var) >= L.graph->size() || L.graph->node(var).op != Op::Variable)
      throw FormatError("runtime: corrupt collective command: " + std::to_string(var) + " is not a variable id");
    const Node& node = L.graph->node(var);
    const size_t cnt = static_cast<size_t>(numel(node.shape));
    const size_t nb = cnt * dtype_size(node.dtype);
    const size_t all_nb = nb * static_cast<size_t>(L.ranks);
    if (root < 0 || root >= L.ranks || (kind == VarOpKind::scatter && all_nb > n - o.in_off))
      throw FormatError("runtime: corrupt collective command for variable '" + node.name + "'");
    const comm::ElemType t = comm::elem_type(node.dtype);
    // Every rank's copy lives in its executor's memory, where its comm works:
    // in place for broadcast and the reductions; gathers collect into the
    // executor's staging and come out to the master's host buffer; a
    // scatter goes in from the master's arguments.
    void* v = ex.variable_storage(var);
    switch (kind) {
      case VarOpKind::broadcast: comm.broadcast(v, cnt, t, root, stream); break;
      case VarOpKind::all_reduce: comm.all_reduce(v, v, cnt, t, o.op, stream); break;
      case VarOpKind::reduce: comm.reduce(v, v, cnt, t, o.op, root, stream); break;
      case VarOpKind::all_gather:
      case VarOpKind::gather: {
        const bool receives = kind == VarOpKind::all_gather || L.rank == 0;
        void* all = receives ? ex.scratch(exec::Executor::Scratch::staging, all_nb) : nullptr;
        if (kind == VarOpKind::all_gather) comm.all_gather(v, all, cnt, t, stream);
        else comm.gather(v, all, cnt, t, 0, stream);
        comm.wait();
        if (out) ex.copy_out(out + out_off, all, all_nb);
        out_off += all_nb;
        break;
      }
      case VarOpKind::scatter: {
        void* all = nullptr;
        if (L.rank == 0) {
          all = ex.scratch(exec::Executor::Scratch::staging, all_nb);
          ex.copy_in(all, args + o.in_off, all_nb);
        }
        comm.scatter(all, v, cnt, t, 0, stream);
        break;
      }
      case VarOpKind::kCount: throw FormatError("runtime: corrupt collective command (op kind)");  // decode_var_ops refused it
    }
    // The watchdog: a failed or missing peer raises here, op by op.
    comm.wait();
  }
}

}  // namespace synk::detail
