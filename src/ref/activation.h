#pragma once
// Reference (float64) activations over row matrices on the host.
#include "ops/activation_problem.h"

namespace kiln::ref {

void activation(const ActivationProblem& p);

}  // namespace kiln::ref
