#pragma once
// CUDA mhc_post_mix (forward and backward): launches for a validated problem; returns the variant.
#include <string>

#include "kiln/core/stream.h"
#include "ops/mhc_mix_problem.h"

namespace kiln::cuda {

std::string mhc_post_mix(const MhcPostMixProblem& p, Stream stream);

}  // namespace kiln::cuda
