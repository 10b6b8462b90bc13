"""Paged KV-cache writes (contract: include/kiln/ops/kv_cache.h)."""

from __future__ import annotations

import torch

from . import _bad_count

_ops = torch.ops.kiln


def kv_cache_write_(
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slot_mapping: torch.Tensor,
    kv_scale: torch.Tensor | None = None,
    return_bad_count: bool = False,
):
    """Writes k, v [T, Hkv, D] (bf16/f16) into key_cache/value_cache [num_blocks, block_size, Hkv,
    D] at slot_mapping [T] (int32/int64; slot = block * block_size + offset; negative = padding,
    skipped). Caches of k's dtype, or float8_e4m3fn with kv_scale (float32 [1] or [Hkv]) holding
    x / scale, saturated. A slot past the cache is never written; it is counted when asked
    (return_bad_count=True returns the int32 [1] count; KILN_CHECK_INDICES=1 syncs and raises),
    and otherwise no count is kept (no zero-fill kernel runs for it)."""
    count = _bad_count.wanted(return_bad_count)
    bad = _ops.kv_cache_write(key_cache, value_cache, k, v, slot_mapping, kv_scale, count)
    _bad_count.check(bad, "kv_cache_write: {} slot(s) past the cache")
    return bad if return_bad_count else None
