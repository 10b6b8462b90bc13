#pragma once
// CUDA FP8 quantization and dequantization: launches for a validated problem; each returns the
// variant it ran.
#include <string>

#include "kiln/core/stream.h"
#include "ops/quantize_problem.h"

namespace kiln::cuda {

std::string quantize_fp8(const QuantizeProblem& p, Stream stream);
std::string dequantize_fp8(const DequantizeProblem& p, Stream stream);

}  // namespace kiln::cuda
