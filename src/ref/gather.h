#pragma once
// Reference row gathers on the host.
#include "ops/gather_problem.h"

namespace kiln::ref {

void gather_rows(const GatherProblem& p);

}  // namespace kiln::ref
