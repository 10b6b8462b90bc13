#pragma once
// Reference (float64) mhc_post_mix and its backward on the host. (The pre-mix is ref::moe_sum.)
#include "ops/mhc_mix_problem.h"

namespace kiln::ref {

void mhc_post_mix(const MhcPostMixProblem& p);

}  // namespace kiln::ref
