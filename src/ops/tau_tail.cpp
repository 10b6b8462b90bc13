// Entry point of tau_tail: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/tau_tail.h"

#include <string>
#include <utility>

#include "core/backend.h"
#include "cuda/tau/tau_launch.h"
#include "ops/tau_problem.h"
#include "ref/tau_tail.h"

namespace kiln {
namespace {

DType param_dtype(std::string_view op, std::string_view arg, const TensorView& t, DType x) {
  if (t.dtype != x && t.dtype != DType::f32) {
    throw_arg_error(op, arg, "dtype " + std::string(dtype_name(x)) + " (qkv's) or f32",
                    dtype_name(t.dtype));
  }
  return t.dtype;
}

}  // namespace

void tau_tail(const TensorView& qkv, const TensorView& tok_qv_lin, const TensorView& tau_pos_table,
              const TensorView& positions, int64_t heads, const TensorView& bad_positions,
              Stream stream) {
  constexpr std::string_view op = "tau_tail";
  check::present(op, "qkv", qkv);
  check::dtype_in(op, "qkv", qkv, {DType::f32, DType::bf16, DType::f16});
  if (qkv.rank != 2) throw_arg_error(op, "qkv", "rank 2 ([T, 3 H D])", "shape " + qkv.shape_str());
  if (heads < 1 || qkv.size(1) % (3 * heads) != 0 || qkv.size(1) == 0) {
    throw_arg_error(op, "heads", "H >= 1 with qkv's last dim a multiple of 3 H",
                    std::to_string(heads) + " for shape " + qkv.shape_str());
  }
  TauProblem p;
  p.op = op;
  p.device = qkv.device;
  p.dtype = qkv.dtype;
  p.tokens = qkv.size(0);
  p.heads = heads;
  p.head_dim = qkv.size(1) / (3 * heads);
  p.qkv = check::rows_of(op, "qkv", qkv);
  for (auto [name, t] : {std::pair<const char*, const TensorView*>{"tok_qv_lin", &tok_qv_lin},
                         {"tau_pos_table", &tau_pos_table},
                         {"positions", &positions}}) {
    check::present(op, name, *t);
    check::same_device(op, name, *t, qkv.device);
  }
  p.tok_dtype = param_dtype(op, "tok_qv_lin", tok_qv_lin, qkv.dtype);
  if (tok_qv_lin.rank != 2 || tok_qv_lin.size(0) != p.tokens || tok_qv_lin.size(1) != 2 * heads) {
    throw_arg_error(op, "tok_qv_lin",
                    "shape [" + std::to_string(p.tokens) + ", " + std::to_string(2 * heads) + "]",
                    "shape " + tok_qv_lin.shape_str());
  }
  p.tok = check::rows_of(op, "tok_qv_lin", tok_qv_lin);
  p.tau_dtype = param_dtype(op, "tau_pos_table", tau_pos_table, qkv.dtype);
  if (tau_pos_table.rank != 2 || tau_pos_table.size(1) != heads || !tau_pos_table.is_contiguous()) {
    throw_arg_error(op, "tau_pos_table", "a contiguous [P, " + std::to_string(heads) + "]",
                    "shape " + tau_pos_table.shape_str());
  }
  p.table_rows = tau_pos_table.size(0);
  p.table = tau_pos_table.data;
  check::dtype_in(op, "positions", positions, {DType::i32, DType::i64});
  check::vector_of(op, "positions", positions, p.tokens);
  p.positions = positions.data;
  p.positions64 = positions.dtype == DType::i64;
  p.bad_positions = check::optional_counter(op, "bad_positions", bad_positions, qkv.device);
  run_on_backend(
      p, "ref::tau_tail", [&] { ref::tau_tail(p); }, [&] { return cuda::tau_tail(p, stream); });
}

}  // namespace kiln
