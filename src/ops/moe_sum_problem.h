#pragma once
// A validated moe_sum call (forward or backward) in the plain form both backends take.
#include <string>

#include "core/check.h"

namespace kiln {

struct MoeSumProblem {
  std::string op;
  bool backward = false;
  Device device;
  DType dtype = DType::f32;    // x, out, dout, dx
  DType w_dtype = DType::f32;  // weights, dweights
  int64_t tokens = 0, k = 0, cols = 0;
  check::RowMatrix x;         // [T * k, N]
  check::RowMatrix weights;   // [T, k] or data null
  check::RowMatrix out;       // forward out [T, N] / backward dout [T, N]
  check::RowMatrix dx;        // backward [T * k, N]
  check::RowMatrix dweights;  // backward [T, k] or data null
};

}  // namespace kiln
