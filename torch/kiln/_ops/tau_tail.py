"""Fake impl of tau_tail (torch/csrc/tau_tail.cpp): qkv is mutated in place; the op returns the
bad-position count. Forward only (the inference path): no autograd is registered."""

from __future__ import annotations

from torch.library import register_fake

from ._bad_count import fake_count


@register_fake("kiln::tau_tail")
def _tau_tail_fake(qkv, tok_qv_lin, tau_pos_table, positions, heads, count_bad=True):
    return fake_count(qkv, count_bad)
