"""Hyper-connections (mHC): the Sinkhorn-Knopp projection (contract: include/kiln/ops/mhc.h)."""

from __future__ import annotations

import torch

_ops = torch.ops.kiln


def sinkhorn_knopp(logits: torch.Tensor, iters: int = 20, eps: float = 1e-8) -> torch.Tensor:
    """The doubly stochastic matrix of exp(logits) after `iters` row-then-column normalisations.

    logits: [B, n, n], n <= 64, float32/bfloat16/float16. Returns [B, n, n] of that dtype; every
    column sums to 1 and rows converge to 1. A fixed number of iterations (deterministic,
    CUDA-graph safe); the backward recomputes the iterates.
    """
    return _ops.sinkhorn_knopp(logits, iters, eps)
