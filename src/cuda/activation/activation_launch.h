#pragma once
// CUDA activations: launches the kernel for a validated problem; returns the variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/activation_problem.h"

namespace kiln::cuda {

std::string activation(const ActivationProblem& p, Stream stream);

}  // namespace kiln::cuda
