"""The mixture-of-experts expert path (contract: include/kiln/ops/moe.h)."""

from __future__ import annotations

import torch

_ops = torch.ops.kiln


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, *, activation: str = "swiglu",
              expert_map: torch.Tensor | None = None) -> torch.Tensor:
    """out [T, H] = sum_j topk_weights[t, j] * w2[e] @ act(w13[e] @ x[t]), e = the local expert
    of pick j (expert_map int32 [E] maps global ids to local ones, -1 drops the pick).

    x [T, H] bf16/f16; w13 [E_local, 2I, H] (gate rows, then up rows) for "swiglu", "gelu_tanh"
    and "gelu_erf" (GELU(gate) * (up + 1)), [E_local, I, H] for "relu2"; w2 [E_local, H, I];
    topk_weights f32 [T, k]; topk_ids int32 [T, k]. The intermediate is rounded to x's dtype.
    CPU tensors run the float64 reference. On CUDA, small batches run one-warp-per-output kernels;
    from 512 picks on a Hopper GPU (H % 8 == 0, I % 64 == 0) the grouped wgmma path runs (align,
    gather, two grouped GEMMs, combine). Both skip picks with bad ids or map values without an
    error (the CPU raises); the receipt names the path.
    No gradient yet.
    """
    return _ops.fused_moe(x, w13, w2, topk_weights, topk_ids, activation, expert_map)
