#pragma once
// Kiln: fused GPU kernels for hybrid LLMs. One include for the whole C++ API.
#include "kiln/core/core.h"
#include "kiln/ops/activation.h"
#include "kiln/ops/attention_mask.h"
#include "kiln/ops/dropout.h"
#include "kiln/ops/gather.h"
#include "kiln/ops/kv_cache.h"
#include "kiln/ops/mhc.h"
#include "kiln/ops/moe_sum.h"
#include "kiln/ops/norm.h"
#include "kiln/ops/rope.h"
#include "kiln/ops/quantize.h"
#include "kiln/ops/tau_tail.h"
