#pragma once
// CUDA row gathers: launches for a validated problem; returns the variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/gather_problem.h"

namespace kiln::cuda {

std::string gather_rows(const GatherProblem& p, Stream stream);

}  // namespace kiln::cuda
