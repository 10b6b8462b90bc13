#pragma once
// CUDA rope / rope_backward: launches for a validated problem; returns the variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/rope_problem.h"

namespace kiln::cuda {

std::string rope(const RopeProblem& p, Stream stream);

}  // namespace kiln::cuda
