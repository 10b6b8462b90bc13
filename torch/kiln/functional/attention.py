"""Dense attention over packed variable-length sequences (contract: include/kiln/ops/attention.h).

CUDA tensors run kiln's attention kernels (forward, and a deterministic backward). CPU tensors
run the float64 reference (slow, exact: the oracle the kernels are tested against), where bad
metadata raises. On the GPU the metadata stays on the device and is not checked on the host: a
sequence whose cu_seqlens / valid lengths are out of range, with decreasing document ids, or (paged)
with page ids outside the cache is counted and skipped (its rows are not written, nothing out of
range is read). return_bad_count=True returns that count (int32 [1], on the device: reading it
syncs); KILN_CHECK_INDICES=1 makes every call sync and raise on a nonzero count (debugging).
"""

from __future__ import annotations

import math

import torch

from . import _bad_count

_ops = torch.ops.kiln


def _checked(op: str, bad: torch.Tensor) -> None:
    _bad_count.check(bad, op + ": {} sequence(s) with bad metadata (skipped)", ValueError)


def attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    *,
    causal: bool = False,
    window: tuple[int, int] = (-1, -1),
    softmax_scale: float | None = None,
    softcap: float = 0.0,
    doc_ids: tuple[torch.Tensor, torch.Tensor] | None = None,
    valid_lengths: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    return_lse: bool = False,
    return_bad_count: bool = False,
):
    """softmax(q kᵀ · scale + mask) v per packed sequence; gradients reach q, k and v.

    q [total_q, Hq, D], k [total_k, Hkv, D], v [total_k, Hkv, Dv] (bf16/f16, last dim contiguous;
    views into a fused qkv buffer work); Hq a multiple of Hkv. cu_seqlens_*: int32 [B + 1].
    causal is bottom-right aligned; window = (left, right), -1 for unbounded; doc_ids = (int32
    [total_q], int32 [total_k]); valid_lengths = (int32 [B] or None, int32 [B] or None).
    softmax_scale defaults to 1 / sqrt(D). Returns out [total_q, Hq, Dv], then lse float32
    [Hq, total_q] when return_lse, then the bad-metadata count when return_bad_count.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    doc_q, doc_k = doc_ids if doc_ids is not None else (None, None)
    valid_q, valid_k = valid_lengths if valid_lengths is not None else (None, None)
    out, lse, bad = _ops.attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, doc_q, doc_k,
                                          valid_q, valid_k, causal, window[0], window[1], scale,
                                          softcap)
    _checked("attention_varlen", bad)
    return _results(out, lse, bad, return_lse, return_bad_count)


def _results(out, lse, bad, return_lse, return_bad_count):
    extra = ((lse,) if return_lse else ()) + ((bad,) if return_bad_count else ())
    return (out,) + extra if extra else out


def attention_varlen_paged(
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_table: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    *,
    causal: bool = False,
    window: tuple[int, int] = (-1, -1),
    softmax_scale: float | None = None,
    softcap: float = 0.0,
    valid_lengths: tuple[torch.Tensor | None, torch.Tensor | None] | None = None,
    return_lse: bool = False,
    return_bad_count: bool = False,
):
    """attention_varlen with K and V in a paged cache (inference; no gradients): key_cache
    [num_pages, page_size, Hkv, D], value_cache [num_pages, page_size, Hkv, Dv], block_table int32
    [B, max_pages] (key j of sequence b in page block_table[b, j // page_size]); page_size a power
    of two >= 16; the keys' lengths are the differences of cu_seqlens_k. Same result as the
    contiguous form, to the bit."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    valid_q, valid_k = valid_lengths if valid_lengths is not None else (None, None)
    out, lse, bad = _ops.attention_varlen_paged(q, key_cache, value_cache, block_table,
                                                cu_seqlens_q, cu_seqlens_k, valid_q, valid_k,
                                                causal, window[0], window[1], scale, softcap)
    _checked("attention_varlen_paged", bad)
    return _results(out, lse, bad, return_lse, return_bad_count)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs):
    """The padded form: q [B, Tq, Hq, D], k and v [B, Tk, Hkv, D / Dv] -> out [B, Tq, Hq, Dv],
    every sequence full length; keyword arguments as attention_varlen's."""
    b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    cu_q = torch.arange(0, (b + 1) * tq, tq, dtype=torch.int32, device=q.device)
    cu_k = torch.arange(0, (b + 1) * tk, tk, dtype=torch.int32, device=q.device)
    result = attention_varlen(q.reshape(b * tq, *q.shape[2:]), k.reshape(b * tk, *k.shape[2:]),
                              v.reshape(b * tk, *v.shape[2:]), cu_q, cu_k, **kwargs)
    if isinstance(result, tuple):
        out, *rest = result
        return (out.view(b, tq, *out.shape[1:]), *rest)
    return result.view(b, tq, *result.shape[1:])
