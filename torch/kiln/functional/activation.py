"""The activation family of the MLP block (contract: include/kiln/ops/activation.h).

Shapes and dtypes, for every function here: inputs [..., N] (packed gated inputs [..., 2N], the
two halves being gate | up, or h | g), all of one dtype: float32, bfloat16 or float16; the last dim
contiguous, the leading dims collapsible into one row stride. Outputs are new contiguous [..., N]
tensors of that dtype. Math in fp32 on CUDA (float64 in the CPU reference). Gradients reach every
input.
"""

from __future__ import annotations

import torch

_ops = torch.ops.kiln


def relu2(x: torch.Tensor) -> torch.Tensor:
    """y = relu(x)^2. x: [..., N]."""
    return _ops.relu2(x)


def swiglu(gate: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
    """y = silu(gate) * up.

    gate, up: [..., N]; or, with up None, gate is the packed gate_up [..., 2N] (gate | up halves).
    Returns y: [..., N].
    """
    return _ops.swiglu_packed(gate) if up is None else _ops.swiglu(gate, up)


def gelu_residual(
    h: torch.Tensor, g: torch.Tensor | None = None, approximate: str = "none"
) -> torch.Tensor:
    """y = GELU(h) * (g + 1), GELU as F.gelu(h, approximate=approximate) ("none": erf, or "tanh").

    h, g: [..., N]; or, with g None, h is the packed hg [..., 2N] (h | g halves).
    Returns y: [..., N].
    """
    if g is None:
        return _ops.gelu_residual_packed(h, approximate)
    return _ops.gelu_residual(h, g, approximate)
