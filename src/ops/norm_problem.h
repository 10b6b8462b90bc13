#pragma once
// A validated normalization call, in the plain form both backends consume: row matrices with
// their strides, parameter pointers, sizes. Built only by check_norm_forward/backward.
#include <string>

#include "core/check.h"
#include "kiln/ops/norm.h"

namespace kiln {

enum class NormKind { rms, layer };

// What every normalization call has: the op, the row matrix x, the sizes, eps.
struct NormProblemBase {
  std::string op;
  NormKind kind = NormKind::rms;
  Device device;
  int64_t rows = 0, cols = 0;
  double eps = 0;
  check::RowMatrix x;
  DType param_dtype = DType::f32;  // dtype of weight and bias (and of dweight, dbias)
};

struct NormForwardProblem : NormProblemBase {
  check::RowMatrix residual, y, residual_out;  // residual/residual_out: data null if absent
  const void* weight = nullptr;                // [cols] or null
  const void* bias = nullptr;                  // [cols] or null
};

struct NormBackwardProblem : NormProblemBase {
  check::RowMatrix dy, dresidual, dx;  // x: the forward's normalised input; dresidual may be absent
  const void* weight = nullptr;        // [cols] or null
  void* dweight = nullptr;             // [cols] or null
  void* dbias = nullptr;               // [cols] or null
};

NormForwardProblem check_norm_forward(std::string_view op, NormKind kind, const TensorView& y,
                                      const TensorView& residual_out, const TensorView& x,
                                      const TensorView& residual, const TensorView& weight,
                                      const TensorView& bias, double eps);

NormBackwardProblem check_norm_backward(std::string_view op, NormKind kind, const TensorView& dx,
                                        const TensorView& dweight, const TensorView& dbias,
                                        const TensorView& dy, const TensorView& x,
                                        const TensorView& weight, double eps,
                                        const TensorView& dresidual);

}  // namespace kiln
