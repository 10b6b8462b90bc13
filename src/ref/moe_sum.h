#pragma once
// Reference (float64) moe_sum and its backward on the host.
#include "ops/moe_sum_problem.h"

namespace kiln::ref {

void moe_sum(const MoeSumProblem& p);

}  // namespace kiln::ref
