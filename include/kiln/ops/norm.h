#pragma once
// The normalization family: RMSNorm and LayerNorm at the block boundary, with the fused residual
// add, forward and backward.
//
// Shapes and layout (every op here):
//   x, residual, y, residual_out, dy, dx, dresidual: [..., N], N >= 1, all the same shape. The
//     last dim is contiguous; the leading dims are seen as M rows and must collapse into one row
//     stride (rows may be strided, e.g. a view into a wider buffer). Each tensor has its own
//     stride. M = 0 is a no-op.
//   weight, bias, dweight, dbias: [N], contiguous; any of them may be absent (a default
//     TensorView), meaning weight = 1 and bias = 0.
// Dtypes: x, residual and the outputs of shape [..., N] share one dtype: f32, bf16 or f16.
//   weight and bias share a dtype: x's dtype or f32. dweight/dbias have the dtype of weight/bias.
// Math: fp32 (reference: float64), rows independent. eps is added to the variance.
// Devices: all tensors on one device: CPU runs the reference, CUDA runs the kernels on `stream`.
// Outputs are written, never accumulated into, and must not overlap the inputs except where an
// op says so. Ops never allocate device memory and never synchronise the host.
// Errors: kiln::Error naming op, argument, expected and given, for a wrong rank, mismatched N or
//   shape, unsupported dtype, tensors on different devices, a non-contiguous last dim, or
//   leading dims that do not collapse into one row stride.
// Bytes moved (the bandwidth the benchmarks count): forward reads x (+ residual) and writes y
//   (+ residual_out); backward reads x, dy (+ dresidual) and writes dx. weight/bias and the
//   dweight/dbias partials are counted too, and are small beside them.
#include <cstddef>

#include "kiln/core/core.h"

namespace kiln {

// y = x / sqrt(mean(x^2) + eps) * weight.
void rms_norm(const TensorView& y, const TensorView& x, const TensorView& weight, double eps,
              Stream stream = nullptr);

// residual_out = x + residual (rounded to x's dtype), y = rms_norm(residual_out, weight, eps):
// one pass, the fused residual add + RMSNorm of a pre-norm block boundary.
void add_rms_norm(const TensorView& y, const TensorView& residual_out, const TensorView& x,
                  const TensorView& residual, const TensorView& weight, double eps,
                  Stream stream = nullptr);

// y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, var the biased (population) variance.
void layer_norm(const TensorView& y, const TensorView& x, const TensorView& weight,
                const TensorView& bias, double eps, Stream stream = nullptr);

// residual_out = x + residual, y = layer_norm(residual_out, weight, bias, eps), one pass.
void add_layer_norm(const TensorView& y, const TensorView& residual_out, const TensorView& x,
                    const TensorView& residual, const TensorView& weight, const TensorView& bias,
                    double eps, Stream stream = nullptr);

// Scratch bytes the backward ops need for x of this shape on x's device (the fp32 per-block
// partial sums of dweight and dbias, folded in a fixed order so the result is the same bits on
// every run). 0 on the CPU.
size_t norm_backward_workspace_size(const TensorView& x);

// Backward of rms_norm (and of add_rms_norm, see below). The stats are recomputed from x.
//   dx = rstd * (w*dy - xhat * mean(xhat * w*dy)) + dresidual,  xhat = x * rstd
//   dweight = sum over rows of dy * xhat (deterministic: no atomics)
// x is the forward's normalised input. dresidual (optional) is the gradient that reaches the
// forward's residual_out from later in the residual stream; it is added to dx. dweight must be
// absent when weight is. dx may alias dy (same data and strides): each row is read before it
// is written.
void rms_norm_backward(const TensorView& dx, const TensorView& dweight, const TensorView& dy,
                       const TensorView& x, const TensorView& weight, double eps,
                       const TensorView& dresidual, const Workspace& workspace,
                       Stream stream = nullptr);

// Backward of layer_norm: dx = rstd * (w*dy - mean(w*dy) - xhat * mean(xhat * w*dy)) + dresidual,
// dweight = sum dy * xhat, dbias = sum dy. Absent dweight/dbias are not computed.
void layer_norm_backward(const TensorView& dx, const TensorView& dweight, const TensorView& dbias,
                         const TensorView& dy, const TensorView& x, const TensorView& weight,
                         double eps, const TensorView& dresidual, const Workspace& workspace,
                         Stream stream = nullptr);

// Backward of add_rms_norm. residual_out and d_residual_out are the forward's second output and
// its incoming gradient. d_sum is the gradient of both x and residual (they get the same one).
inline void add_rms_norm_backward(const TensorView& d_sum, const TensorView& dweight,
                                  const TensorView& dy, const TensorView& d_residual_out,
                                  const TensorView& residual_out, const TensorView& weight,
                                  double eps, const Workspace& workspace, Stream stream = nullptr) {
  rms_norm_backward(d_sum, dweight, dy, residual_out, weight, eps, d_residual_out, workspace,
                    stream);
}

// Backward of add_layer_norm; see add_rms_norm_backward.
inline void add_layer_norm_backward(const TensorView& d_sum, const TensorView& dweight,
                                    const TensorView& dbias, const TensorView& dy,
                                    const TensorView& d_residual_out,
                                    const TensorView& residual_out, const TensorView& weight,
                                    double eps, const Workspace& workspace,
                                    Stream stream = nullptr) {
  layer_norm_backward(d_sum, dweight, dbias, dy, residual_out, weight, eps, d_residual_out,
                      workspace, stream);
}

}  // namespace kiln
