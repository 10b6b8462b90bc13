"""The combine step of a mixture-of-experts layer (contract: include/kiln/ops/moe_sum.h)."""

from __future__ import annotations

import torch

_ops = torch.ops.kiln


def moe_sum(x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """out[t] = sum_j weights[t, j] * x[t, j], the k terms added in order (same bits every run).

    x: [T, k, N], k <= 16, float32/bfloat16/float16; weights: [T, k] of x's dtype or float32, or
    None (a plain sum). Returns out: [T, N], x's dtype. Gradients reach x and weights.
    """
    return _ops.moe_sum(x, weights)
