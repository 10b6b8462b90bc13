#pragma once
// The sublayer exit of a transformer block: out = residual + dropout(x + bias), forward and
// backward, with a counter-based mask that the backward regenerates instead of storing.
//
// x, residual, out: [..., N], one shape and dtype (f32, bf16, f16), the last dim contiguous and
// the leading dims collapsible into one row stride; bias: [N] of that dtype, or absent.
// Element i (the row-major index over [..., N], whatever the strides) is kept iff
// u(seed, offset, i) >= p, where u is the Philox4x32-10 uniform in [0, 1) of src/core/philox.h
// (counter = (i / 4, offset), key = seed, lane i % 4); kept values are scaled by 1 / (1 - p).
// The same (seed, offset) gives the same mask on the CPU and the GPU. p in [0, 1]; p = 0 or
// training = false is an exact add, out = residual + (x + bias), with no mask drawn.
// Math: x + bias, the scale and + residual in fp32 on the GPU (float64 in the reference), one
// rounding to the dtype. Outputs may alias an input of the same view.
#include <cstdint>

#include "kiln/core/core.h"

namespace kiln {

void bias_dropout_add(const TensorView& out, const TensorView& x, const TensorView& bias,
                      const TensorView& residual, double p, uint64_t seed, uint64_t offset,
                      bool training, Stream stream = nullptr);

// Scratch bytes bias_dropout_add_backward needs for dbias on dout's device (fp32 partial column
// sums, one row per slot of the kernel's rows, folded in a fixed order): 0 on the CPU.
size_t bias_dropout_add_backward_workspace_size(const TensorView& dout);

// dx = dout * keep / (1 - p), the mask regenerated from (seed, offset); dbias [N] (when given) =
// the column sums of dx over every row, reduced in a fixed order (the same bits every run; on a
// GPU through `workspace`, 16-byte aligned, of the size above). The residual's gradient is dout
// itself. dx may alias dout.
void bias_dropout_add_backward(const TensorView& dx, const TensorView& dbias,
                               const TensorView& dout, double p, uint64_t seed, uint64_t offset,
                               bool training, const Workspace& workspace = {},
                               Stream stream = nullptr);

}  // namespace kiln
