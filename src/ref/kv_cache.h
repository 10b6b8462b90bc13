#pragma once
// Reference kv_cache_write on the host.
#include "ops/kv_cache_problem.h"

namespace kiln::ref {

void kv_cache_write(const KvCacheProblem& p);

}  // namespace kiln::ref
