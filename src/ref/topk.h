#pragma once
#include "ops/topk_problem.h"

namespace kiln::ref {

// Per row: a stable sort of the indices by topk_before, the first k kept (float64 softmax).
void topk(const TopkProblem& p);

}  // namespace kiln::ref
