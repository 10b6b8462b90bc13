"""The normalization family: RMSNorm and LayerNorm over the last dim, with the fused residual add
of a pre-norm block boundary (contract: include/kiln/ops/norm.h).

Shapes and dtypes, for every function here:
    x, residual: [..., N], N >= 1, the same shape and dtype: float32, bfloat16 or float16. The last
        dim must be contiguous and the leading dims must collapse into one row stride (a row view
        into a wider buffer is fine; a transposed tensor is not).
    weight, bias: [N], contiguous, of x's dtype or float32 (both the same), or None (weight = 1,
        bias = 0).
    outputs: new contiguous tensors of x's shape and dtype.
Math in fp32 on CUDA (float64 in the CPU reference); eps is added to the variance. Gradients reach
x, residual, weight and bias.
"""

from __future__ import annotations

import torch

_ops = torch.ops.kiln


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """y = x / sqrt(mean(x^2) + eps) * weight, over the last dim.

    x: [..., N] float32/bfloat16/float16; weight: [N] of x's dtype or float32, or None.
    Returns y: [..., N], x's dtype.
    """
    return _ops.rms_norm(x, weight, eps)


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused residual add + RMSNorm: residual_out = x + residual (rounded to x's dtype),
    y = rms_norm(residual_out, weight, eps), in one pass.

    x, residual: [..., N] float32/bfloat16/float16, same shape and dtype; weight: [N] or None.
    Returns (y, residual_out), both [..., N] of x's dtype.
    """
    return _ops.add_rms_norm(x, residual, weight, eps)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the last dim, var the biased
    (population) variance, as torch.nn.functional.layer_norm.

    x: [..., N] float32/bfloat16/float16; weight, bias: [N] of x's dtype or float32 (the same), or
    None. Returns y: [..., N], x's dtype.
    """
    return _ops.layer_norm(x, weight, bias, eps)


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused residual add + LayerNorm: residual_out = x + residual (rounded to x's dtype),
    y = layer_norm(residual_out, weight, bias, eps), in one pass.

    x, residual: [..., N], same shape and dtype; weight, bias: [N] or None.
    Returns (y, residual_out), both [..., N] of x's dtype.
    """
    return _ops.add_layer_norm(x, residual, weight, bias, eps)
