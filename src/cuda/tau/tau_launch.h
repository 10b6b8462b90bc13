#pragma once
// CUDA tau_tail: launches for a validated problem; returns the variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/tau_problem.h"

namespace kiln::cuda {

std::string tau_tail(const TauProblem& p, Stream stream);

}  // namespace kiln::cuda
