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
  check::RowMatrix x;         // [T * k, N]: row_stride between a token's k rows
  check::RowMatrix weights;   // [T, k] or data null: row_stride between tokens
  check::RowMatrix out;       // forward out [T, N] / backward dout [T, N]
  check::RowMatrix dx;        // backward [T * k, N]: row_stride between a token's k rows
  check::RowMatrix dweights;  // backward [T, k] or data null
  // Strides (elements) that moe_sum's own checks fix (x and dx: k * row_stride; weights: 1) and
  // that mhc_pre_mix, which runs on these kernels, leaves free: its streams [T, n, C] may have
  // any token stride, and its H_pre [T, n] any strides (0 over T for one static H broadcast).
  int64_t x_token_stride = 0, dx_token_stride = 0, w_k_stride = 1;
};

}  // namespace kiln
