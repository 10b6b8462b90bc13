"""Fake impls and autograd of moe_sum (torch/csrc/moe_sum.cpp)."""

from __future__ import annotations

import torch
from torch.library import register_autograd, register_fake

from ._grad import rows as _rows

_ops = torch.ops.kiln


@register_fake("kiln::moe_sum")
def _moe_sum_fake(x, weights):
    torch._check(x.dim() == 3, lambda: "moe_sum: argument 'x': expected rank 3 ([T, k, N])")
    return x.new_empty((x.shape[0], x.shape[2]))


@register_fake("kiln::moe_sum_backward")
def _moe_sum_backward_fake(dout, x, weights, need_dweights):
    dw = weights.new_empty(weights.shape) if need_dweights and weights is not None else None
    return x.new_empty(x.shape), dw


def _setup(ctx, inputs, output):
    x, weights = inputs
    ctx.save_for_backward(x, weights)


def _backward(ctx, dout):
    x, weights = ctx.saved_tensors
    need_dweights = weights is not None and ctx.needs_input_grad[1]
    return _ops.moe_sum_backward(_rows(dout), x, weights, need_dweights)


register_autograd("kiln::moe_sum", _backward, setup_context=_setup)
