#pragma once
#include "ops/router_problem.h"

namespace kiln::ref {

// The routers in float64: per row the scores, the selection (biased; DeepSeek-V3's groups), the
// top-k in topk's order, the weights.
void router(const RouterProblem& p);

// logits = x gate^T in float64, rounded to fp32 (into logits_out, or a host buffer), then router.
void dense_router(const DenseRouterProblem& p);

// ids[t] = table[token_ids[t]], weights 1 / k; a token id outside [0, vocab) gives ids -1,
// weights 0, and one count.
void hash_router(const HashRouterProblem& p);

}  // namespace kiln::ref
