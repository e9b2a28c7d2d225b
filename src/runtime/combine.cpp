// src/runtime/combine.cpp — how the master combines every rank's share of
// a call into the call's results, by the outputs' collect modes.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "rank/accum.hpp"
#include "runtime/core.hpp"

namespace synk::detail {

std::vector<Array> combine(const std::vector<ResultView>& ranks, const std::vector<Collect>& collects,
                           const std::string& fn_name, std::span<const int64_t> chunk_rows) {
  std::vector<Array> out;
  for (size_t i = 0; i < collects.size(); ++i) {
    Accum acc(collects[i], i);
    DType t = DType::f32;
    Shape empty_shape;
    bool any = false;
    size_t chunk = 0;  // deterministic calls: the next chunk, in chunk order over the ranks
    for (const ResultView& r : ranks) {
      if (!r.ran || i >= r.outs.size()) continue;
      const ArrayView& v = r.outs[i];
      if (!chunk_rows.empty() && collects[i] != Collect::gather) {
        // One piece per chunk on the first dim: each its own part.
        if (v.shape.empty()) throw FormatError("runtime: a chunked result of '" + fn_name + "' has no chunk dim");
        ArrayView piece{v.dtype, Shape(v.shape.begin() + 1, v.shape.end()), v.data};
        const size_t piece_bytes = static_cast<size_t>(piece.numel()) * dtype_size(v.dtype);
        for (int64_t k = 0; k < v.shape[0]; ++k, ++chunk) {
          if (chunk >= chunk_rows.size()) throw FormatError("runtime: more chunks than the call of '" + fn_name + "' has");
          piece.data = static_cast<const uint8_t*>(v.data) + static_cast<size_t>(k) * piece_bytes;
          t = v.dtype;
          if (collects[i] == Collect::none && any) continue;
          any = true;
          acc.add_view(piece, static_cast<double>(chunk_rows[chunk]));
        }
        continue;
      }
      if (collects[i] == Collect::none && &r != &ranks[0]) continue;
      t = v.dtype;
      empty_shape = v.shape;
      any = true;
      acc.add_view(v, static_cast<double>(r.rows));
    }
    if (!empty_shape.empty()) empty_shape[0] = 0;
    out.push_back(any ? acc.result(t, empty_shape) : Array());
  }
  return out;
}


}  // namespace synk::detail
