#pragma once
// The combine step of a mixture-of-experts layer: each token's k expert outputs, weighted by
// their routing weights, summed into one row.
//
// x: [T, k, N], k <= 16 (the top-k), the last dim contiguous and [T, k] collapsible into one row
// stride (x viewed as T*k rows); weights: [T, k] (last dim contiguous), of x's dtype or f32, or
// absent (all 1); out, dout: [T, N]. Dtypes f32, bf16, f16. fp32 accumulation, the k terms added
// in order j = 0 .. k-1 (the same bits every run).
#include "kiln/core/core.h"

namespace kiln {

inline constexpr int kMoeSumMaxK = 16;

// out[t, :] = sum_j weights[t, j] * x[t, j, :].
void moe_sum(const TensorView& out, const TensorView& x, const TensorView& weights,
             Stream stream = nullptr);

// dx[t, j, :] = weights[t, j] * dout[t, :]; dweights[t, j] = sum_n dout[t, n] * x[t, j, n]
// (when dweights, [T, k] of weights' dtype, is given; it needs weights).
void moe_sum_backward(const TensorView& dx, const TensorView& dweights, const TensorView& dout,
                      const TensorView& x, const TensorView& weights, Stream stream = nullptr);

}  // namespace kiln
