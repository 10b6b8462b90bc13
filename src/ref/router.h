#pragma once
#include "ops/router_problem.h"

namespace kiln::ref {

// The routers in float64: per row the scores, the selection (biased; DeepSeek-V3's groups), the
// top-k in topk's order, the weights.
void router(const RouterProblem& p);

}  // namespace kiln::ref
