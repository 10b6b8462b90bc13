"""Fake impls and autograd of the rope ops (torch/csrc/rope.cpp). The gradient of rope is the
rotation by -theta (rope_backward); positions and the cos/sin cache get none."""

from __future__ import annotations

import torch
from torch.library import register_autograd, register_fake

from ._bad_count import fake_count
from ._grad import rows as _rows

_ops = torch.ops.kiln


@register_fake("kiln::rope")
def _rope_fake(q, k, cos_sin_cache, positions, layout, rotary_dim, count_bad=True):
    return q.new_empty(q.shape), k.new_empty(k.shape), fake_count(q, count_bad)


@register_fake("kiln::rope_inplace")
def _rope_inplace_fake(q, k, cos_sin_cache, positions, layout, rotary_dim, count_bad=True):
    return fake_count(q, count_bad)


@register_fake("kiln::rope_backward")
def _rope_backward_fake(dq_out, dk_out, cos_sin_cache, positions, layout, rotary_dim):
    return dq_out.new_empty(dq_out.shape), dk_out.new_empty(dk_out.shape)


def _setup(ctx, inputs, output):
    cos_sin_cache, positions, layout, rotary_dim = inputs[2:6]
    ctx.save_for_backward(cos_sin_cache, positions)
    ctx.layout, ctx.rotary_dim = layout, rotary_dim


def _backward(ctx, dq_out, dk_out, _dbad):
    cos_sin_cache, positions = ctx.saved_tensors
    dq, dk = _ops.rope_backward(
        _rows(dq_out), _rows(dk_out), cos_sin_cache, positions, ctx.layout, ctx.rotary_dim
    )
    return dq, dk, None, None, None, None, None


register_autograd("kiln::rope", _backward, setup_context=_setup)
