"""Fake impls and autograd of the mHC family (torch/csrc/mhc.cpp): the backward recomputes the
Sinkhorn iterates from the saved logits."""

from __future__ import annotations

import torch
from torch.library import register_autograd, register_fake

from ._grad import rows as _rows

_ops = torch.ops.kiln


@register_fake("kiln::sinkhorn_knopp")
def _sinkhorn_knopp_fake(logits, iters, eps):
    return logits.new_empty(logits.shape)


@register_fake("kiln::sinkhorn_knopp_backward")
def _sinkhorn_knopp_backward_fake(dout, logits, iters, eps):
    return logits.new_empty(logits.shape)


def _setup(ctx, inputs, output):
    logits, iters, eps = inputs
    ctx.save_for_backward(logits)
    ctx.iters, ctx.eps = iters, eps


def _backward(ctx, dout):
    (logits,) = ctx.saved_tensors
    return _ops.sinkhorn_knopp_backward(_rows(dout), logits, ctx.iters, ctx.eps), None, None


register_autograd("kiln::sinkhorn_knopp", _backward, setup_context=_setup)
