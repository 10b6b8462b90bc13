#pragma once
// Activations of the MLP block, forward and backward: relu2, swiglu, gelu_residual.
//
// Every tensor is [..., N] with the same shape, the last dim contiguous and the leading dims
// collapsible into one row stride (so each half of a packed [..., 2N] buffer is a valid view;
// see split_halves). Dtypes f32, bf16, f16, one dtype a call; math in fp32 on the GPU, float64 in
// the reference. Outputs may alias an input of the same view (in place). On CUDA every tensor
// must be on the same device. Outputs first, stream last, as everywhere in kiln.
#include <utility>

#include "kiln/core/core.h"

namespace kiln {

enum class GeluApprox {
  erf,   // GELU(h) = h/2 (1 + erf(h / sqrt(2)))
  tanh,  // GELU(h) = h/2 (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))
};

// y = relu(x)^2 (squared ReLU, Primer / Nemotron MLPs).
void relu2(const TensorView& y, const TensorView& x, Stream stream = nullptr);
// dx = dy * 2 relu(x).
void relu2_backward(const TensorView& dx, const TensorView& dy, const TensorView& x,
                    Stream stream = nullptr);

// y = silu(gate) * up, silu(g) = g * sigmoid(g) (SwiGLU MLPs).
void swiglu(const TensorView& y, const TensorView& gate, const TensorView& up,
            Stream stream = nullptr);
// dgate = dy * up * sigmoid(g) * (1 + g (1 - sigmoid(g))), dup = dy * silu(g).
void swiglu_backward(const TensorView& dgate, const TensorView& dup, const TensorView& dy,
                     const TensorView& gate, const TensorView& up, Stream stream = nullptr);

// y = GELU(h) * (g + 1) (the gated GELU with a residual gate of Kestrel's MLP).
void gelu_residual(const TensorView& y, const TensorView& h, const TensorView& g, GeluApprox approx,
                   Stream stream = nullptr);
// dh = dy * (g + 1) * GELU'(h), dg = dy * GELU(h).
void gelu_residual_backward(const TensorView& dh, const TensorView& dg, const TensorView& dy,
                            const TensorView& h, const TensorView& g, GeluApprox approx,
                            Stream stream = nullptr);

// The two halves [..., :N] and [..., N:] of a packed [..., 2N] tensor, as views (no copy): the
// (gate, up) of swiglu or the (h, g) of gelu_residual, and likewise for their gradients.
// Throws kiln::Error when the last dim is odd or absent.
std::pair<TensorView, TensorView> split_halves(const TensorView& packed);

// Packed forms: gate_up / hg [..., 2N] -> y [..., N]; backward writes d(gate_up) [..., 2N].
void swiglu(const TensorView& y, const TensorView& gate_up, Stream stream = nullptr);
void swiglu_backward(const TensorView& dgate_up, const TensorView& dy, const TensorView& gate_up,
                     Stream stream = nullptr);
void gelu_residual(const TensorView& y, const TensorView& hg, GeluApprox approx,
                   Stream stream = nullptr);
void gelu_residual_backward(const TensorView& dhg, const TensorView& dy, const TensorView& hg,
                            GeluApprox approx, Stream stream = nullptr);

}  // namespace kiln
