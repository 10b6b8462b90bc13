#pragma once
// Kernel arguments of the normalization family: raw pointers, sizes, strides in elements.
#include <cstdint>

namespace kiln::cuda {

struct NormForwardArgs {
  const void* x;         // [rows, cols], row stride x_stride
  const void* residual;  // [rows, cols] or null
  const void* weight;    // [cols] or null
  const void* bias;      // [cols] or null
  void* y;               // [rows, cols]
  void* residual_out;    // [rows, cols] or null (null iff residual is)
  int64_t rows;
  int cols;
  int64_t x_stride, residual_stride, y_stride, residual_out_stride;
  float eps;
  float inv_cols;  // 1 / cols (IEEE division rounds the same on host and device)
};

struct NormBackwardArgs {
  const void* dy;          // [rows, cols]
  const void* x;           // [rows, cols]: the forward's normalised input
  const void* weight;      // [cols] or null
  const void* dresidual;   // [rows, cols] or null
  void* dx;                // [rows, cols]; may alias dy
  float* dweight_partial;  // [slots, cols] fp32 or null
  float* dbias_partial;    // [slots, cols] fp32 or null
  int64_t rows;
  int cols;
  int64_t dy_stride, x_stride, dresidual_stride, dx_stride;
  float eps;
  float inv_cols;  // 1 / cols
};

}  // namespace kiln::cuda
