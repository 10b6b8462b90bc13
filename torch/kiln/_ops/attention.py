"""Fake impls and autograd of attention_varlen (torch/csrc/attention.cpp)."""

from __future__ import annotations

import torch
from torch.library import register_autograd, register_fake

from ._bad_count import fake_count
from ._grad import rows as _rows

_ops = torch.ops.kiln


@register_fake("kiln::attention_varlen")
def _attention_varlen_fake(q, k, v, cu_q, cu_k, doc_q, doc_k, valid_q, valid_k, causal, left,
                           right, scale, softcap):
    torch._check(q.dim() == 3 and v.dim() == 3,
                 lambda: "attention_varlen: argument 'q': expected rank 3 [tokens, heads, dim]")
    out = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
    lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    return out, lse, fake_count(q)


@register_fake("kiln::attention_varlen_paged")
def _attention_varlen_paged_fake(q, key_cache, value_cache, block_table, *meta):
    torch._check(q.dim() == 3 and value_cache.dim() == 4,
                 lambda: "attention_varlen_paged: expected q rank 3 and caches rank 4")
    out = q.new_empty((q.shape[0], q.shape[1], value_cache.shape[3]))
    lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    return out, lse, fake_count(q)


@register_fake("kiln::attention_varlen_backward")
def _attention_varlen_backward_fake(dout, q, k, v, out, lse, *meta):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup(ctx, inputs, output):
    q, k, v, cu_q, cu_k, doc_q, doc_k, valid_q, valid_k, *flags = inputs
    out, lse, _ = output  # the bad-metadata count has no gradient
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, doc_q, doc_k, valid_q, valid_k)
    ctx.flags = flags  # causal, window_left, window_right, softmax_scale, softcap


def _backward(ctx, dout, dlse, dbad):
    q, k, v, out, lse, *meta = ctx.saved_tensors
    dq, dk, dv = _ops.attention_varlen_backward(_rows(dout), q, k, v, out, lse, *meta, *ctx.flags)
    return (dq, dk, dv) + (None,) * 11


register_autograd("kiln::attention_varlen", _backward, setup_context=_setup)
