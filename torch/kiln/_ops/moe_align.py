"""Fake impl of moe_align_block_size (torch/csrc/moe_align.cpp)."""

from __future__ import annotations

import torch
from torch.library import register_fake


@register_fake("kiln::moe_align_block_size")
def _moe_align_fake(topk_ids, num_experts, block_size, expert_map, num_local_experts):
    raw = topk_ids.shape[0] * topk_ids.shape[1] + num_local_experts * (block_size - 1)
    cap = (raw + block_size - 1) // block_size * block_size
    new = lambda n: topk_ids.new_empty((n,), dtype=torch.int32)  # noqa: E731
    return new(cap), new(cap // block_size), new(1), new(1)
