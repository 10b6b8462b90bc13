"""Fake impls of the routers (torch/csrc/router.cpp). No autograd yet: the router weights'
gradient (to the logits) comes with the kiln.nn.MoE training path of issue 5."""

from __future__ import annotations

import torch
from torch.library import register_fake


@register_fake("kiln::router")
def _router_fake(logits, kind, k, renormalize, bias, n_group, topk_group, scaling):
    torch._check(logits.dim() == 2, lambda: "router: argument 'logits': expected rank 2 [T, E]")
    return (logits.new_empty((logits.shape[0], k), dtype=torch.float32),
            logits.new_empty((logits.shape[0], k), dtype=torch.int32))


@register_fake("kiln::hash_router")
def _hash_router_fake(token_ids, table):
    rows, k = token_ids.shape[0], table.shape[1]
    return (token_ids.new_empty((rows, k), dtype=torch.float32),
            token_ids.new_empty((rows, k), dtype=torch.int32),
            token_ids.new_empty((1,), dtype=torch.int32))
