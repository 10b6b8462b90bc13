"""Rotary position embedding (contract: include/kiln/ops/rope.h)."""

from __future__ import annotations

import torch

from . import _bad_count

_ops = torch.ops.kiln


def _checked(bad: torch.Tensor) -> None:
    _bad_count.check(bad, "rope: {} position(s) out of range (left unrotated)")


def rope(
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    positions: torch.Tensor,
    layout: str = "neox",
    rotary_dim: int | None = None,
    return_bad_count: bool = False,
):
    """q [T, Hq, D] and k [T, Hk, D] rotated by their tokens' positions, into new tensors.

    q, k: float32/bfloat16/float16 (one dtype), last dim contiguous, token and head strides free
    (views into a fused qkv buffer work). cos_sin_cache: float32 [max_position, rotary_dim], row p
    = cos(p theta_i) | sin(p theta_i) (vLLM's layout; any scaling is just another cache).
    positions: int64 [T]. layout: "neox" (pairs i, i + R/2) or "gptj" (pairs 2i, 2i + 1).
    rotary_dim (default: the cache's width) <= D; the rest of each head is copied through.
    A position outside [0, max_position) is never read and leaves its token unrotated; it is
    counted when asked (return_bad_count=True returns the int32 [1] count; KILN_CHECK_INDICES=1
    syncs and raises); otherwise no count is kept, so no zero-fill kernel runs for it.
    Gradients reach q and k (the rotation by -theta). Returns (q_out, k_out[, count])."""
    r = cos_sin_cache.shape[-1] if rotary_dim is None else rotary_dim
    count = _bad_count.wanted(return_bad_count)
    q_out, k_out, bad = _ops.rope(q, k, cos_sin_cache, positions, layout, r, count)
    _checked(bad)
    return (q_out, k_out, bad) if return_bad_count else (q_out, k_out)


def rope_(
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    positions: torch.Tensor,
    layout: str = "neox",
    rotary_dim: int | None = None,
    return_bad_count: bool = False,
):
    """rope in place on q and k (the inference path; no autograd). Returns (q, k[, count])."""
    r = cos_sin_cache.shape[-1] if rotary_dim is None else rotary_dim
    count = _bad_count.wanted(return_bad_count)
    bad = _ops.rope_inplace(q, k, cos_sin_cache, positions, layout, r, count)
    _checked(bad)
    return (q, k, bad) if return_bad_count else (q, k)
