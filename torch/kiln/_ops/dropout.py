"""Fake impls and autograd of bias_dropout_add (torch/csrc/dropout.cpp). The backward regenerates
the mask from the saved (seed, offset); nothing of the mask is stored."""

from __future__ import annotations

import torch
from torch.library import register_autograd, register_fake

from ._grad import rows as _rows

_ops = torch.ops.kiln


@register_fake("kiln::bias_dropout_add")
def _bias_dropout_add_fake(x, bias, residual, p, seed, offset, training):
    return x.new_empty(x.shape)


@register_fake("kiln::bias_dropout_add_backward")
def _bias_dropout_add_backward_fake(dout, p, seed, offset, training, need_dbias):
    dbias = dout.new_empty(dout.shape[-1:]) if need_dbias else None
    return dout.new_empty(dout.shape), dbias


def _setup(ctx, inputs, output):
    _, bias, _, p, seed, offset, training = inputs
    ctx.key = (p, seed, offset, training)
    ctx.has_bias = bias is not None


def _backward(ctx, dout):
    dout = _rows(dout)
    p, seed, offset, training = ctx.key
    need_dbias = ctx.has_bias and ctx.needs_input_grad[1]
    dx, dbias = _ops.bias_dropout_add_backward(dout, p, seed, offset, training, need_dbias)
    return dx, dbias, dout, None, None, None, None


register_autograd("kiln::bias_dropout_add", _backward, setup_context=_setup)
