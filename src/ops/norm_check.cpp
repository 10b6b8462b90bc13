// Argument checks for the normalization family, shared by both backends and the bindings.
#include <cmath>
#include <string>

#include "ops/norm_problem.h"

namespace kiln {
namespace {

constexpr std::initializer_list<DType> kActivationDtypes = {DType::f32, DType::bf16, DType::f16};

// Checks an optional [N] parameter; returns its dtype through `dtype` when present.
const void* param(std::string_view op, std::string_view arg, const TensorView& t,
                  const TensorView& x, int64_t n, const TensorView*& first_param) {
  if (!t.defined()) return nullptr;
  check::same_device(op, arg, t, x.device);
  if (first_param == nullptr) {
    if (t.dtype != x.dtype && t.dtype != DType::f32) {
      throw_arg_error(op, arg, "dtype " + std::string(dtype_name(x.dtype)) + " (x's) or f32",
                      dtype_name(t.dtype));
    }
    first_param = &t;
  } else {
    check::same_dtype(op, arg, t, first_param->dtype);
  }
  check::vector_of(op, arg, t, n);
  return t.data;
}

// Checks x and eps and fills what every normalization call has.
void check_common(std::string_view op, NormKind kind, const TensorView& x, double eps,
                  NormProblemBase& p) {
  check::present(op, "x", x);
  check::rank_at_least(op, "x", x, 1);
  check::dtype_in(op, "x", x, kActivationDtypes);
  if (x.size(-1) < 1) throw_arg_error(op, "x", "last dim N >= 1", "shape " + x.shape_str());
  if (!(eps >= 0) || !std::isfinite(eps)) {
    throw_arg_error(op, "eps", "a finite value >= 0", std::to_string(eps));
  }
  p.op = op;
  p.kind = kind;
  p.device = x.device;
  p.eps = eps;
  p.x = check::rows_of(op, "x", x);
  p.rows = p.x.rows;
  p.cols = p.x.cols;
  p.param_dtype = x.dtype;
}

}  // namespace

NormForwardProblem check_norm_forward(std::string_view op, NormKind kind, const TensorView& y,
                                      const TensorView& residual_out, const TensorView& x,
                                      const TensorView& residual, const TensorView& weight,
                                      const TensorView& bias, double eps) {
  NormForwardProblem p;
  check_common(op, kind, x, eps, p);
  p.y = check::like(op, "y", y, x);
  if (residual.defined() != residual_out.defined()) {
    throw_arg_error(op, residual.defined() ? "residual_out" : "residual",
                    "residual and residual_out both present or both absent",
                    residual.defined() ? "residual_out absent" : "residual absent");
  }
  if (residual.defined()) {
    p.residual = check::like(op, "residual", residual, x);
    p.residual_out = check::like(op, "residual_out", residual_out, x);
  }
  const TensorView* first_param = nullptr;
  p.weight = param(op, "weight", weight, x, p.cols, first_param);
  p.bias = param(op, "bias", bias, x, p.cols, first_param);
  if (first_param) p.param_dtype = first_param->dtype;
  return p;
}

NormBackwardProblem check_norm_backward(std::string_view op, NormKind kind, const TensorView& dx,
                                        const TensorView& dweight, const TensorView& dbias,
                                        const TensorView& dy, const TensorView& x,
                                        const TensorView& weight, double eps,
                                        const TensorView& dresidual) {
  NormBackwardProblem p;
  check_common(op, kind, x, eps, p);
  p.dy = check::like(op, "dy", dy, x);
  p.dx = check::like(op, "dx", dx, x);
  if (dresidual.defined()) p.dresidual = check::like(op, "dresidual", dresidual, x);
  if (dweight.defined() && !weight.defined()) {
    throw_arg_error(op, "dweight", "absent when weight is absent", dweight.describe());
  }
  const TensorView* first_param = nullptr;
  p.weight = param(op, "weight", weight, x, p.cols, first_param);
  p.dweight = const_cast<void*>(param(op, "dweight", dweight, x, p.cols, first_param));
  p.dbias = const_cast<void*>(param(op, "dbias", dbias, x, p.cols, first_param));
  if (first_param) p.param_dtype = first_param->dtype;
  if (kind == NormKind::rms && dbias.defined()) {
    throw_arg_error(op, "dbias", "absent (RMSNorm has no bias)", dbias.describe());
  }
  return p;
}

}  // namespace kiln
