#pragma once
// w8a8 fused_moe's activation quantizer (ops/moe.h, fp8_activations): rows of bf16/f16 to e4m3 in
// 1 x 128 groups along the row, scale = max(amax, 1e-4) / 448 a group and values
// e4m3(v * (1 / scale)) (nearest even, saturating): the recipe of quantize_fp8's group
// granularity and of the reference. CUDA-free, so the op layer builds without nvcc.
#include <cstdint>

#include "kiln/core/dtype.h"
#include "kiln/core/stream.h"

namespace kiln::cuda {

struct QuantizeRowsArgs {
  const void* x;  // [rows, cols] bf16/f16, rows x_stride elements apart; cols % 8 == 0
  int64_t x_stride;
  uint8_t* q;     // [rows, cols] e4m3, contiguous
  float* scales;  // [rows, ceil(cols / 128)], contiguous
  int64_t rows = 0, cols = 0;
  const int32_t* rows_used = nullptr;  // device scalar: rows at or past it are skipped; null: all
};

void quantize_rows_e4m3(const QuantizeRowsArgs& a, DType x_dtype, Stream stream);

}  // namespace kiln::cuda
