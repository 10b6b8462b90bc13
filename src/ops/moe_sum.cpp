// Entry points of moe_sum: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/moe_sum.h"

#include <string>

#include "core/backend.h"
#include "cuda/moe_sum/moe_sum_launch.h"
#include "ops/moe_sum_problem.h"
#include "ref/moe_sum.h"

namespace kiln {
namespace {

MoeSumProblem make_problem(std::string_view op, const TensorView& x, const TensorView& weights) {
  check::present(op, "x", x);
  check::dtype_in(op, "x", x, {DType::f32, DType::bf16, DType::f16});
  if (x.rank != 3) throw_arg_error(op, "x", "rank 3 ([T, k, N])", "shape " + x.shape_str());
  MoeSumProblem p;
  p.op = op;
  p.device = x.device;
  p.dtype = x.dtype;
  p.tokens = x.size(0);
  p.k = x.size(1);
  p.cols = x.size(2);
  if (p.k < 1 || p.k > kMoeSumMaxK) {
    throw_arg_error(op, "x", "k = x.size(1) in [1, " + std::to_string(kMoeSumMaxK) + "]",
                    "shape " + x.shape_str());
  }
  p.x = check::rows_of(op, "x", x);
  p.x_token_stride = p.k * p.x.row_stride;
  if (weights.defined()) {
    check::same_device(op, "weights", weights, x.device);
    if (weights.dtype != x.dtype && weights.dtype != DType::f32) {
      throw_arg_error(op, "weights", "dtype " + std::string(dtype_name(x.dtype)) + " (x's) or f32",
                      dtype_name(weights.dtype));
    }
    if (weights.rank != 2 || weights.size(0) != p.tokens || weights.size(1) != p.k) {
      throw_arg_error(op, "weights",
                      "shape [" + std::to_string(p.tokens) + ", " + std::to_string(p.k) + "]",
                      "shape " + weights.shape_str());
    }
    p.weights = check::rows_of(op, "weights", weights);
    p.w_dtype = weights.dtype;
  }
  return p;
}

// A [T, N] argument: x's device and dtype, shape [T, N].
check::RowMatrix token_rows(std::string_view op, std::string_view arg, const TensorView& t,
                            const MoeSumProblem& p) {
  check::present(op, arg, t);
  check::same_device(op, arg, t, p.device);
  check::same_dtype(op, arg, t, p.dtype);
  if (t.rank != 2 || t.size(0) != p.tokens || t.size(1) != p.cols) {
    throw_arg_error(op, arg,
                    "shape [" + std::to_string(p.tokens) + ", " + std::to_string(p.cols) + "]",
                    "shape " + t.shape_str());
  }
  return check::rows_of(op, arg, t);
}

void run(const MoeSumProblem& p, Stream stream) {
  run_on_backend(
      p, "ref::moe_sum", [&] { ref::moe_sum(p); }, [&] { return cuda::moe_sum(p, stream); });
}

}  // namespace

void moe_sum(const TensorView& out, const TensorView& x, const TensorView& weights, Stream stream) {
  MoeSumProblem p = make_problem("moe_sum", x, weights);
  p.out = token_rows("moe_sum", "out", out, p);
  run(p, stream);
}

void moe_sum_backward(const TensorView& dx, const TensorView& dweights, const TensorView& dout,
                      const TensorView& x, const TensorView& weights, Stream stream) {
  constexpr std::string_view op = "moe_sum_backward";
  MoeSumProblem p = make_problem(op, x, weights);
  p.backward = true;
  p.out = token_rows(op, "dout", dout, p);
  p.dx = check::like(op, "dx", dx, x);
  p.dx_token_stride = p.k * p.dx.row_stride;
  if (dweights.defined()) {
    if (!weights.defined()) throw_arg_error(op, "dweights", "absent when weights is", "a tensor");
    p.dweights = check::like(op, "dweights", dweights, weights);
  }
  run(p, stream);
}

}  // namespace kiln
