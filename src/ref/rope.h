#pragma once
// Reference (float64) rope and rope_backward on the host.
#include "ops/rope_problem.h"

namespace kiln::ref {

void rope(const RopeProblem& p);

}  // namespace kiln::ref
