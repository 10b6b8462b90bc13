"""out = residual + dropout(x + bias), the sublayer exit (contract: include/kiln/ops/dropout.h)."""

from __future__ import annotations

import torch

_ops = torch.ops.kiln


def bias_dropout_add(
    x: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    p: float,
    training: bool = True,
    seed: int | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """out = residual + dropout(x + bias, p); gradients reach x, bias and residual.

    x, residual: [..., N] of one dtype (float32, bfloat16, float16); bias: [N] or None.
    The mask is Philox4x32-10 keyed by (seed, offset, element index): the same key gives the same
    mask on CPU and GPU, and the backward regenerates it. seed None draws one from torch's default
    CPU generator (pass seed and offset explicitly to replay a mask, inside a CUDA graph, and
    under torch.compile, where drawing it would break the graph: there seed None is an error).
    p = 0 or training = False is the plain add.
    """
    if seed is None and torch.compiler.is_compiling():
        raise ValueError(
            "kiln.bias_dropout_add: argument 'seed': expected an int under torch.compile "
            "(the mask's key; drawing one from torch's generator would break the graph), got None"
        )
    if seed is None:
        seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64).item())
    return _ops.bias_dropout_add(x, bias, residual, p, seed, offset, training)
