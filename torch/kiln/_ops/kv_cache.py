"""Fake impl of kv_cache_write (torch/csrc/kv_cache.cpp): the caches are mutated in place; the op
returns the bad-slot count. No autograd (a cache write is inference-side)."""

from __future__ import annotations

import torch
from torch.library import register_fake


@register_fake("kiln::kv_cache_write")
def _kv_cache_write_fake(key_cache, value_cache, k, v, slot_mapping, kv_scale, count_bad=True):
    return k.new_empty((1 if count_bad else 0,), dtype=torch.int32)
