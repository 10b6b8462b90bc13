#pragma once
// CUDA bias_dropout_add (forward and backward): launches for a validated problem; returns the
// variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/dropout_problem.h"

namespace kiln::cuda {

std::string bias_dropout_add(const DropoutProblem& p, Stream stream);

}  // namespace kiln::cuda
