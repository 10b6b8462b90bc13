#pragma once
// CUDA topk: launches for a validated problem; returns the variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/topk_problem.h"

namespace kiln::cuda {

std::string topk(const TopkProblem& p, Stream stream);

}  // namespace kiln::cuda
