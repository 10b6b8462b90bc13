#pragma once
// Reference (float64) bias_dropout_add and its backward on the host.
#include "ops/dropout_problem.h"

namespace kiln::ref {

void bias_dropout_add(const DropoutProblem& p);

}  // namespace kiln::ref
