"""The mixture-of-experts expert path (contract: include/kiln/ops/moe.h)."""

from __future__ import annotations

import torch

from . import _bad_count

_ops = torch.ops.kiln


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, *, activation: str = "swiglu",
              expert_map: torch.Tensor | None = None, w13_scale: torch.Tensor | None = None,
              w2_scale: torch.Tensor | None = None, fp8_activations: bool = False,
              return_bad_count: bool = False):
    """out [T, H] = sum_j topk_weights[t, j] * w2[e] @ act(w13[e] @ x[t]), e = the local expert
    of pick j (expert_map int32 [E] maps global ids to local ones, -1 drops the pick).

    x [T, H] bf16/f16; w13 [E_local, 2I, H] (gate rows, then up rows) for "swiglu", "gelu_tanh"
    and "gelu_erf" (GELU(gate) * (up + 1)), [E_local, I, H] for "relu2"; w2 [E_local, H, I];
    topk_weights f32 [T, k]; topk_ids int32 [T, k]. The intermediate is rounded to x's dtype.
    FP8 weights (w8a16): w13 and w2 as torch.float8_e4m3fn with float32 128 x 128 block scales
    w13_scale [E_local, ceil(rows13 / 128), ceil(H / 128)] and w2_scale [E_local, ceil(H / 128),
    ceil(I / 128)] (an element stands for w * its block's scale); on CUDA they take the per-pick
    GEMV kernels below 256 picks (T k) and from 256 on the by-expert kernels (an expert's picks
    on tensor-core MMAs; H and I multiples of 64). fp8_activations=True (w8a8, FP8 weights only) quantizes x and the
    intermediate to e4m3 in 1 x 128 groups as well (scale = max(amax, 1e-4) / 448, DeepSeek-V3's
    recipe) and runs both products on FP8 wgmma at every T (Hopper only; the CPU reference
    quantizes the same way). Inference only (no gradient).
    CPU tensors run the float64 reference and raise on a bad id or map value. On CUDA, below 512
    picks one-warp-per-output kernels run; from 512 on a Hopper GPU (H % 8 == 0, I % 64 == 0) the
    grouped wgmma path (align, gather, two grouped GEMMs, combine). Both skip a pick whose id is
    outside [0, E) or whose map value is outside [-1, E_local) and count it:
    return_bad_count=True returns (out, count) with count int32 [1] on x's device. The receipt
    names the path. Gradients: kiln.nn.MoE.
    """
    out, bad = _ops.fused_moe(x, w13, w2, topk_weights, topk_ids, activation, expert_map,
                              w13_scale, w2_scale, fp8_activations)
    _bad_count.check(bad, "fused_moe: {} pick(s) with a bad id or map value skipped")
    return (out, bad) if return_bad_count else out
