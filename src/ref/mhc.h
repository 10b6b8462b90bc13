#pragma once
// Reference (float64) Sinkhorn-Knopp and its backward on the host.
#include <span>

#include "ops/mhc_problem.h"

namespace kiln::ref {

void sinkhorn_knopp(const SinkhornProblem& p);

// One n x n matrix (row-major, float64): out = the projection of logits; when dout is given,
// dlogits = its gradient instead (out is then scratch).
void sinkhorn_matrix(int n, int iters, double eps, std::span<const double> logits,
                     std::span<double> out, std::span<const double> dout = {},
                     std::span<double> dlogits = {});

}  // namespace kiln::ref
