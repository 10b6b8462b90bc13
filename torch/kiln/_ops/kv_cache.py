"""Fake impl of kv_cache_write (torch/csrc/kv_cache.cpp): the caches are mutated in place; the op
returns the bad-slot count. No autograd (a cache write is inference-side)."""

from __future__ import annotations

from torch.library import register_fake

from ._bad_count import fake_count


@register_fake("kiln::kv_cache_write")
def _kv_cache_write_fake(key_cache, value_cache, k, v, slot_mapping, kv_scale, count_bad=True):
    return fake_count(k, count_bad)
