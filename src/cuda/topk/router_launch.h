#pragma once
// CUDA routers: launches for a validated problem; returns the variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/router_problem.h"

namespace kiln::cuda {

std::string router(const RouterProblem& p, Stream stream);

// hash_router.cu: a thread per (token, pick).
std::string hash_router(const HashRouterProblem& p, Stream stream);

}  // namespace kiln::cuda
