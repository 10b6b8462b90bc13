#pragma once
// A validated fused_moe call in the plain form the backends take.
#include <cstdint>
#include <string>

#include "core/check.h"
#include "core/int_math.h"
#include "kiln/ops/moe.h"
#include "ops/activation_math.h"

namespace kiln {

struct MoeProblem {
  std::string op;
  Device device;
  DType dtype = DType::bf16;
  MoeActivation activation = MoeActivation::swiglu;
  int64_t tokens = 0, hidden = 0, inter = 0, k = 0, experts = 0, local_experts = 0;
  check::RowMatrix x, out;                   // [T, H]
  const void *w13 = nullptr, *w2 = nullptr;  // contiguous [E_local, (2)I, H], [E_local, H, I]
  DType weight_dtype = DType::bf16;          // dtype, or f8e4m3 with the block scales below
  const float *w13_scale = nullptr, *w2_scale = nullptr;  // [E_local, ceil(rows / 128), ...]
  bool fp8_activations = false;  // w8a8: x and the intermediate quantized to e4m3, 1 x 128 groups
  check::RowMatrix weights, ids;                          // [T, k]
  const int32_t* expert_map = nullptr;                    // [E] contiguous, or null
  int32_t* bad_ids = nullptr;                             // [1] counter on the device
  bool gated() const { return activation != MoeActivation::relu2; }
  bool fp8_weights() const { return weight_dtype == DType::f8e4m3; }
  int64_t rows13() const { return gated() ? 2 * inter : inter; }
  // 128-wide scale blocks along a dim of n elements (FP8 weights: 128 x 128 blocks).
  static int64_t scale_blocks(int64_t n) { return ceil_div(n, 128); }
  // The activation in the shared math's terms (ops/activation_math.h), for reference and kernel.
  act::Kind act_kind() const {
    switch (activation) {
      case MoeActivation::swiglu:
        return act::Kind::swiglu;
      case MoeActivation::gelu_tanh:
        return act::Kind::gelu_tanh;
      case MoeActivation::gelu_erf:
        return act::Kind::gelu_erf;
      default:
        return act::Kind::relu2;
    }
  }
};

}  // namespace kiln
