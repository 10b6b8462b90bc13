#pragma once
// A validated topk call in the plain form both backends take.
#include <cstdint>
#include <string>

#include "core/check.h"
#include "ops/topk_order.h"

namespace kiln {

struct TopkProblem {
  std::string op;
  Device device;
  DType dtype = DType::f32, values_dtype = DType::f32;
  int64_t rows = 0, experts = 0, k = 0;
  bool softmax = false;
  check::RowMatrix scores, values, indices;
};

}  // namespace kiln
