"""Fake impl of tau_tail (torch/csrc/tau_tail.cpp): qkv is mutated in place; the op returns the
bad-position count. Forward only (the inference path): no autograd is registered."""

from __future__ import annotations

import torch
from torch.library import register_fake


@register_fake("kiln::tau_tail")
def _tau_tail_fake(qkv, tok_qv_lin, tau_pos_table, positions, heads, count_bad=True):
    return qkv.new_empty((1 if count_bad else 0,), dtype=torch.int32)
