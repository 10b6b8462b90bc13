#pragma once
// A validated router call in the plain form both backends take.
#include <cstdint>
#include <string>

#include "core/check.h"
#include "kiln/ops/router.h"

namespace kiln {

struct RouterProblem {
  std::string op;
  Device device;
  DType dtype = DType::f32;
  RouterKind kind = RouterKind::softmax;
  int64_t rows = 0, experts = 0, k = 0;
  bool renormalize = false;
  const float* bias = nullptr;  // [experts], contiguous, or null
  int64_t n_group = 1, topk_group = 1;
  double scale = 1.0;  // routed_scaling_factor
  check::RowMatrix logits, weights, ids;
};

}  // namespace kiln
