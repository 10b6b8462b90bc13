// Entry points of the row gathers: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/gather.h"

#include <string>

#include "core/backend.h"
#include "core/check.h"
#include "cuda/gather/gather_launch.h"
#include "ops/gather_problem.h"
#include "ref/gather.h"

namespace kiln {
namespace {

// src [N, ...] / out [M, ...]: trailing dims equal and contiguous; rows along dim 0.
GatherRows rows_pair(std::string_view op, std::string_view src_name, std::string_view out_name,
                     const TensorView& src, const TensorView& out, int64_t m) {
  check::present(op, src_name, src);
  check::present(op, out_name, out);
  check::rank_at_least(op, src_name, src, 1);
  check::same_device(op, out_name, out, src.device);
  check::same_dtype(op, out_name, out, src.dtype);
  bool ok = out.rank == src.rank && out.size(0) == m;
  for (int d = 1; d < src.rank; ++d) ok = ok && out.size(d) == src.size(d);
  if (!ok) {
    TensorView like = src;
    like.sizes[0] = m;
    throw_arg_error(op, out_name, "shape " + like.shape_str(), "shape " + out.shape_str());
  }
  auto row_bytes = [&](const TensorView& t, std::string_view name) {
    int64_t expect = 1;
    for (int d = t.rank - 1; d >= 1; --d) {
      if (t.size(d) != 1 && t.stride(d) != expect) {
        throw_arg_error(op, name, "contiguous trailing dims (each row one block)",
                        "strides that are not, on shape " + t.shape_str());
      }
      expect *= t.size(d);
    }
    return expect * static_cast<int64_t>(t.element_size());
  };
  GatherRows g;
  g.src = src.data;
  g.out = out.data;
  g.row_bytes = row_bytes(src, src_name);
  row_bytes(out, out_name);
  const int64_t esize = static_cast<int64_t>(src.element_size());
  g.src_stride_bytes = src.size(0) > 1 ? src.stride(0) * esize : g.row_bytes;
  g.out_stride_bytes = m > 1 ? out.stride(0) * esize : g.row_bytes;
  if (src.size(0) > 1 && g.src_stride_bytes < g.row_bytes) {
    throw_arg_error(op, src_name, "rows that do not overlap", "shape " + src.shape_str());
  }
  return g;
}

GatherProblem make_problem(std::string_view op, const TensorView& src, const TensorView& index,
                           const TensorView& bad_indices) {
  check::present(op, "index", index);
  check::dtype_in(op, "index", index, {DType::i32, DType::i64});
  check::same_device(op, "index", index, src.device);
  if (index.rank != 1 || (index.size(0) > 1 && index.stride(0) != 1)) {
    throw_arg_error(op, "index", "a contiguous 1-D tensor [M]", "shape " + index.shape_str());
  }
  int32_t* bad = check::optional_counter(op, "bad_indices", bad_indices, src.device);
  GatherProblem p;
  p.op = op;
  p.device = src.device;
  p.n = src.rank >= 1 ? src.size(0) : 0;
  p.m = index.size(0);
  p.index = index.data;
  p.index64 = index.dtype == DType::i64;
  p.bad_indices = bad;
  return p;
}

void run(const GatherProblem& p, Stream stream) {
  run_on_backend(
      p, "ref::gather_rows", [&] { ref::gather_rows(p); },
      [&] { return cuda::gather_rows(p, stream); });
}

}  // namespace

void gather_rows(const TensorView& out, const TensorView& src, const TensorView& index,
                 const TensorView& bad_indices, Stream stream) {
  constexpr std::string_view op = "gather_rows";
  check::present(op, "src", src);
  GatherProblem p = make_problem(op, src, index, bad_indices);
  p.a = rows_pair(op, "src", "out", src, out, p.m);
  run(p, stream);
}

void gather_rows_pair(const TensorView& out_k, const TensorView& out_v, const TensorView& k,
                      const TensorView& v, const TensorView& index, const TensorView& bad_indices,
                      Stream stream) {
  constexpr std::string_view op = "gather_rows_pair";
  check::present(op, "k", k);
  check::present(op, "v", v);
  check::same_device(op, "v", v, k.device);
  if (v.rank < 1 || v.size(0) != k.size(0)) {
    throw_arg_error(op, "v", "as many rows as k (" + std::to_string(k.size(0)) + ")",
                    "shape " + v.shape_str());
  }
  GatherProblem p = make_problem(op, k, index, bad_indices);
  p.a = rows_pair(op, "k", "out_k", k, out_k, p.m);
  p.b = rows_pair(op, "v", "out_v", v, out_v, p.m);
  run(p, stream);
}

}  // namespace kiln
