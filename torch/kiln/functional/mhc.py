"""Hyper-connections (mHC): the Sinkhorn-Knopp projection and the n-stream mixing (contract:
include/kiln/ops/mhc.h)."""

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


def mhc_pre_mix(x: torch.Tensor, h_pre: torch.Tensor) -> torch.Tensor:
    """The layer input mixed from the n residual streams: h[t] = sum_i h_pre[t, i] * x[t, i].

    x: [T, n, C], n <= 8, float32/bfloat16/float16, the last dim contiguous (other strides free);
    h_pre: float32 [T, n], any strides (``H.expand(T, n)`` for one static H). Returns h: [T, C],
    x's dtype. fp32 math, fixed order. Gradients reach x and h_pre.
    """
    return _ops.mhc_pre_mix(x, h_pre)


def mhc_post_mix(
    x: torch.Tensor, y: torch.Tensor, h_res: torch.Tensor, h_post: torch.Tensor
) -> torch.Tensor:
    """The next residual streams: x'[t, j] = sum_i h_res[t, j, i] * x[t, i] + h_post[t, j] * y[t].

    The paper's x_{l+1} = H_res x_l + H_post^T F(H_pre x_l): h_res multiplies the streams from
    the left (``torch.einsum('tji,tic->tjc', h_res, x)``). Code written as
    ``comb.transpose(-1, -2) @ streams`` (e.g. DeepSeek-V4's) passes
    ``h_res=comb.transpose(-1, -2)``, a view. x: [T, n, C], n <= 8; y: [T, C], x's dtype;
    h_res: float32 [T, n, n], h_post: float32 [T, n], any strides (expanded static ones too).
    Returns x': [T, n, C]. One pass forward and backward; gradients reach all four inputs.
    """
    return _ops.mhc_post_mix(x, y, h_res, h_post)
