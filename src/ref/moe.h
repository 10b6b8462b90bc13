#pragma once
// Reference (float64) fused_moe on the host: a loop over tokens and their picks.
#include "ops/moe_problem.h"

namespace kiln::ref {

void fused_moe(const MoeProblem& p);

}  // namespace kiln::ref
