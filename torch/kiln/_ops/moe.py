"""Fake impl of fused_moe (torch/csrc/moe.cpp). No autograd yet: the bf16 training path
(kiln.nn.MoE) comes with the grouped GEMMs of issue 5."""

from __future__ import annotations

import torch
from torch.library import register_fake


@register_fake("kiln::fused_moe")
def _fused_moe_fake(x, w13, w2, topk_weights, topk_ids, activation, expert_map):
    torch._check(x.dim() == 2, lambda: "fused_moe: argument 'x': expected rank 2 [T, H]")
    return x.new_empty(x.shape), x.new_empty((1,), dtype=torch.int32)
