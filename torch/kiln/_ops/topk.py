"""Fake impl of topk (torch/csrc/topk.cpp). No autograd: the indices are integers and the router
ops that differentiate through the picked weights come with issue 5's routers."""

from __future__ import annotations

import torch
from torch.library import register_fake


@register_fake("kiln::topk")
def _topk_fake(scores, k, softmax, f32_values):
    torch._check(scores.dim() == 2, lambda: "topk: argument 'scores': expected rank 2 [T, E]")
    dtype = torch.float32 if f32_values else scores.dtype
    return (scores.new_empty((scores.shape[0], k), dtype=dtype),
            scores.new_empty((scores.shape[0], k), dtype=torch.int32))
