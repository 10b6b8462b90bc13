#pragma once
// CUDA Sinkhorn-Knopp (forward and backward): launches for a validated problem; returns the
// variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/mhc_problem.h"

namespace kiln::cuda {

std::string sinkhorn_knopp(const SinkhornProblem& p, Stream stream);

}  // namespace kiln::cuda
