#pragma once
// Reference (float64) tau_tail on the host.
#include "ops/tau_problem.h"

namespace kiln::ref {

void tau_tail(const TauProblem& p);

}  // namespace kiln::ref
