#pragma once
// CUDA kv_cache_write: launches for a validated problem; returns the variant name.
#include <string>

#include "kiln/core/stream.h"
#include "ops/kv_cache_problem.h"

namespace kiln::cuda {

std::string kv_cache_write(const KvCacheProblem& p, Stream stream);

}  // namespace kiln::cuda
