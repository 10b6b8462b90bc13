#pragma once
// Host description of one grouped expert GEMM (grouped_gemm_sm90.cuh) and its launcher. CUDA-free,
// so the op layer builds without nvcc.
#include <cstdint>
#include <string>

#include "kiln/core/dtype.h"
#include "kiln/core/stream.h"
#include "ops/activation_math.h"

namespace kiln::cuda {

struct GroupedGemm {
  DType dtype = DType::bf16;      // of a, b and out; or f8e4m3 a and b with the scales below
  DType out_dtype = DType::bf16;  // f8e4m3 only: of out (bf16 or f16)
  // f8e4m3 only: A's 1 x 128 scales [rows, ceil(k / 128)] (rows a_scale_stride apart) and B's
  // 128 x 128 block scales [experts, ceil(n / 128), ceil(k / 128)] contiguous, on the device.
  const float* a_scale = nullptr;
  int64_t a_scale_stride = 0;
  const float* b_scale = nullptr;
  const void* a = nullptr;  // [rows, k], rows a_stride elements apart
  int64_t rows = 0, k = 0, a_stride = 0;
  const void* b = nullptr;  // [experts, n, k] contiguous
  int64_t experts = 0, n = 0;
  const int32_t* block_expert = nullptr;  // device [ceil(rows / 128)]: expert of each row block
  const int32_t* block_rows = nullptr;    // device [ceil(rows / 128)]: rows in use, or null (all)
  const int32_t* rows_used = nullptr;     // device scalar (rows past it skipped), or null
  const float* row_scale = nullptr;       // device [rows], or null
  void* out = nullptr;                    // [rows, gated ? n / 2 : n]
  int64_t out_stride = 0;
  bool gated = false;     // out = act(gate, up) of B's two halves
  bool activate = false;  // plain: out = act(acc, 0)
  act::Kind kind = act::Kind::swiglu;
};

// Launches on a Hopper device and returns the variant name; returns "" having launched nothing
// when the problem is outside what the kernel takes (another GPU, a view TMA cannot describe, n
// odd, gated with n / 2 not a multiple of 64; FP8: scales absent, k not a multiple of 16).
// FP8 always runs the n128 tile (128 x 128, 4 stages, one CTA a SM).
std::string grouped_gemm_sm90(const GroupedGemm& p, Stream stream);

}  // namespace kiln::cuda
