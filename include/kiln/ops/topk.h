#pragma once
// Top-k of each row (issue 5, the router's first step).
//
// scores [T, E] f32, bf16 or f16 (the last dim contiguous, rows strided freely), 1 <= E <= 1024,
// 1 <= k <= min(E, 32). Per row: the k largest scores sorted descending, ties to the lower index
// (so results are deterministic and equal the reference exactly); NaN ranks above every number
// (as torch.topk), NaNs among themselves by index. values [T, k] (f32, or scores' dtype) and
// indices int32 [T, k]. With softmax, values are softmax over the k picked scores (fp32 math)
// instead of the scores themselves.
#include <cstdint>

#include "kiln/core/core.h"

namespace kiln {

inline constexpr int64_t kTopkMaxE = 1024;
inline constexpr int64_t kTopkMaxK = 32;

void topk(const TensorView& values, const TensorView& indices, const TensorView& scores, int64_t k,
          bool softmax, Stream stream = nullptr);

}  // namespace kiln
