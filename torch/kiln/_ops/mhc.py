"""Fake impls and autograd of the mHC family (torch/csrc/mhc.cpp): the Sinkhorn backward
recomputes the iterates from the saved logits; the stream mixes' backwards return per-token dH's
(f32 [T, ...]), which autograd sums over T itself where H was an expanded static matrix."""

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


@register_fake("kiln::mhc_pre_mix")
def _mhc_pre_mix_fake(x, h_pre):
    torch._check(x.dim() == 3, lambda: "mhc_pre_mix: argument 'x': expected rank 3 ([T, n, C])")
    return x.new_empty((x.shape[0], x.shape[2]))


@register_fake("kiln::mhc_pre_mix_backward")
def _mhc_pre_mix_backward_fake(dh, x, h_pre, need_dh_pre):
    return x.new_empty(x.shape), h_pre.new_empty(h_pre.shape) if need_dh_pre else None


@register_fake("kiln::mhc_post_mix")
def _mhc_post_mix_fake(x, y, h_res, h_post):
    return x.new_empty(x.shape)


@register_fake("kiln::mhc_post_mix_backward")
def _mhc_post_mix_backward_fake(dx_out, x, y, h_res, h_post):
    return (x.new_empty(x.shape), y.new_empty(y.shape), h_res.new_empty(h_res.shape),
            h_post.new_empty(h_post.shape))


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _pre_backward(ctx, dh):
    x, h_pre = ctx.saved_tensors
    return _ops.mhc_pre_mix_backward(_rows(dh), x, h_pre, ctx.needs_input_grad[1])


def _post_backward(ctx, dx_out):
    x, y, h_res, h_post = ctx.saved_tensors
    return _ops.mhc_post_mix_backward(_rows(dx_out), x, y, h_res, h_post)


register_autograd("kiln::mhc_pre_mix", _pre_backward, setup_context=_save_inputs)
register_autograd("kiln::mhc_post_mix", _post_backward, setup_context=_save_inputs)
