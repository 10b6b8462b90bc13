#pragma once
// Reference FP8 quantization and dequantization on the host: the fp32 arithmetic the contract
// (include/kiln/ops/quantize.h) spells out, tile by tile.
#include "ops/quantize_problem.h"

namespace kiln::ref {

// max |x| over tile (i, j), NaN ignored (0 for an empty tile).
float tile_absmax(const QuantizeProblem& p, int64_t i, int64_t j);

// The scale of a tile of this absmax: min(max(amax, floor), ceiling) / fp8_max, in fp32.
float scale_of_amax(float amax, float amax_floor, float amax_ceiling, DType fp8);

void quantize_fp8(const QuantizeProblem& p);
void dequantize_fp8(const DequantizeProblem& p);

}  // namespace kiln::ref
