"""MoE routers: logits -> (weights, ids) in one call (contract: include/kiln/ops/router.h)."""

from __future__ import annotations

import torch

from . import _bad_count

_ops = torch.ops.kiln


def router(logits: torch.Tensor, k: int, *, kind: str = "softmax", renormalize: bool = False,
           bias: torch.Tensor | None = None, n_group: int = 1, topk_group: int = 1,
           routed_scaling_factor: float = 1.0):
    """(weights float32 [T, k], ids int32 [T, k]) from logits [T, E] (E <= 1024, k <= 32).

    kind: "softmax" (renormalize optional), "deepseek_v3" (sigmoid; bias float32 [E] for the
    selection only; n_group / topk_group group-limited choice; renormalised, times
    routed_scaling_factor) or "activation" (MegaMoE: sqrt(softplus); bias optional; renormalised).
    Picks sorted by selection, ties to the lower id. The weights have a gradient to the logits
    (recomputed in float64 torch ops at the picks; the ids have none).
    """
    return _ops.router(logits, kind, k, renormalize, bias, n_group, topk_group,
                       routed_scaling_factor)


def dense_router(x: torch.Tensor, gate: torch.Tensor, k: int, *, kind: str = "softmax",
                 renormalize: bool = False, bias: torch.Tensor | None = None, n_group: int = 1,
                 topk_group: int = 1, routed_scaling_factor: float = 1.0):
    """(weights float32 [T, k], ids int32 [T, k], logits float32 [T, E]) from hidden states x
    [T, H] and the gate weight [E, H] (x's dtype): logits = x @ gate.T in fp32, then ``router``.
    One call: up to 16 tokens a fused kernel (the gate GEMV and the routing in one launch), above
    that a cuBLAS GEMM and the router kernel; the receipt says which. Differentiable in x and gate
    (through the weights and the logits)."""
    return _ops.dense_router(x, gate, kind, k, renormalize, bias, n_group, topk_group,
                             routed_scaling_factor)


def hash_router(token_ids: torch.Tensor, table: torch.Tensor, return_bad_count: bool = False):
    """(weights 1/k float32 [T, k], ids = table[token_ids] int32 [T, k]); token ids outside the
    table are never read: their ids are -1 and weights 0, counted when asked:
    return_bad_count=True appends the count (int32 [1], on the tokens' device); without it (and
    without KILN_CHECK_INDICES=1) nothing is counted, so no zero-fill kernel runs for the count.
    token_ids int64 [T], table int32 [vocab, k] (any strides), on one device (CPU: the reference;
    CUDA: a thread per token)."""
    w, ids, bad = _ops.hash_router(token_ids, table, _bad_count.wanted(return_bad_count))
    _bad_count.check(bad, "hash_router: {} token id(s) outside the table (ids -1, weights 0)")
    return (w, ids, bad) if return_bad_count else (w, ids)
