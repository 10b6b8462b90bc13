#pragma once
// CUDA moe_sum (forward and backward): launches for a validated problem; returns the variant.
#include <string>

#include "kiln/core/stream.h"
#include "ops/moe_sum_problem.h"

namespace kiln::cuda {

std::string moe_sum(const MoeSumProblem& p, Stream stream);

}  // namespace kiln::cuda
