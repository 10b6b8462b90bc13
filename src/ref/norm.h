#pragma once
#include <span>

#include "ops/norm_problem.h"

namespace kiln::ref {

// The reference: plain loops, float64 math, rows in order. It is the spec the kernels match.
void norm_forward(const NormForwardProblem& p);
void norm_backward(const NormBackwardProblem& p);

// One row in float64, the math itself (the finite-difference tests call these directly).
// weight/bias may be null (1 and 0). y, dx: [N].
void norm_forward_row(NormKind kind, std::span<const double> x, const double* weight,
                      const double* bias, double eps, std::span<double> y);
// dx = d(sum(y * dy))/dx; dweight/dbias (if non-null) are accumulated into (+=).
void norm_backward_row(NormKind kind, std::span<const double> x, std::span<const double> dy,
                       const double* weight, double eps, std::span<double> dx, double* dweight,
                       double* dbias);

}  // namespace kiln::ref
