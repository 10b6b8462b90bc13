"""Fake impls and autograd of the normalization family (torch/csrc/norm.cpp).

Forward ops save x (or residual_out, for the add_* ops) and weight; the stats are recomputed in
the backward op. For add_*, the gradient of residual_out (the second output) enters the backward
as ``dresidual``, and x and residual receive the same gradient, d_sum.
"""

from __future__ import annotations

import torch
from torch.library import register_autograd, register_fake

from ._grad import rows as _rows

_ops = torch.ops.kiln


def _like_x(x: torch.Tensor) -> torch.Tensor:
    # Outputs are fresh, contiguous, of x's shape and dtype.
    return x.new_empty(x.shape)


def _param_grad(param: torch.Tensor | None, needed: bool) -> torch.Tensor | None:
    return param.new_empty(param.shape) if needed and param is not None else None


# ---- fake impls: output metadata only; kiln's checks run when the real op does ----


@register_fake("kiln::rms_norm")
def _rms_norm_fake(x, weight, eps):
    return _like_x(x)


@register_fake("kiln::add_rms_norm")
def _add_rms_norm_fake(x, residual, weight, eps):
    return _like_x(x), _like_x(x)


@register_fake("kiln::layer_norm")
def _layer_norm_fake(x, weight, bias, eps):
    return _like_x(x)


@register_fake("kiln::add_layer_norm")
def _add_layer_norm_fake(x, residual, weight, bias, eps):
    return _like_x(x), _like_x(x)


@register_fake("kiln::rms_norm_backward")
def _rms_norm_backward_fake(dy, x, weight, eps, dresidual, need_dweight):
    return _like_x(x), _param_grad(weight, need_dweight)


@register_fake("kiln::layer_norm_backward")
def _layer_norm_backward_fake(dy, x, weight, bias, eps, dresidual, need_dweight, need_dbias):
    return _like_x(x), _param_grad(weight, need_dweight), _param_grad(bias, need_dbias)


# ---- autograd ----


def _dresidual(t: torch.Tensor | None) -> torch.Tensor | None:
    # None when residual_out was unused.
    return None if t is None else _rows(t)


def _dy(t: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    # The gradient of y is needed even when y itself was unused (then it is zero).
    return x.new_zeros(x.shape) if t is None else _rows(t)


def _setup_norm(ctx, x, weight, bias, eps):
    ctx.save_for_backward(x, weight, bias)
    ctx.eps = eps
    # Unused outputs give None gradients instead of materialised zeros.
    ctx.set_materialize_grads(False)


def _setup_rms_norm(ctx, inputs, output):
    x, weight, eps = inputs
    _setup_norm(ctx, x, weight, None, eps)


def _setup_add_rms_norm(ctx, inputs, output):
    _, _, weight, eps = inputs
    _setup_norm(ctx, output[1], weight, None, eps)  # residual_out is the normalised input


def _setup_layer_norm(ctx, inputs, output):
    x, weight, bias, eps = inputs
    _setup_norm(ctx, x, weight, bias, eps)


def _setup_add_layer_norm(ctx, inputs, output):
    _, _, weight, bias, eps = inputs
    _setup_norm(ctx, output[1], weight, bias, eps)


def _rms_backward(ctx, dy, dresidual, weight_index):
    x, weight, _ = ctx.saved_tensors
    need_dweight = weight is not None and ctx.needs_input_grad[weight_index]
    return _ops.rms_norm_backward(
        _dy(dy, x), x, weight, ctx.eps, _dresidual(dresidual), need_dweight
    )


def _layer_backward(ctx, dy, dresidual, weight_index):
    x, weight, bias = ctx.saved_tensors
    need_dweight = weight is not None and ctx.needs_input_grad[weight_index]
    need_dbias = bias is not None and ctx.needs_input_grad[weight_index + 1]
    return _ops.layer_norm_backward(
        _dy(dy, x), x, weight, bias, ctx.eps, _dresidual(dresidual), need_dweight, need_dbias
    )


def _rms_norm_backward(ctx, dy):
    dx, dweight = _rms_backward(ctx, dy, None, weight_index=1)
    return dx, dweight, None


def _add_rms_norm_backward(ctx, dy, d_residual_out):
    d_sum, dweight = _rms_backward(ctx, dy, d_residual_out, weight_index=2)
    return d_sum, d_sum, dweight, None


def _layer_norm_backward(ctx, dy):
    dx, dweight, dbias = _layer_backward(ctx, dy, None, weight_index=1)
    return dx, dweight, dbias, None


def _add_layer_norm_backward(ctx, dy, d_residual_out):
    d_sum, dweight, dbias = _layer_backward(ctx, dy, d_residual_out, weight_index=2)
    return d_sum, d_sum, dweight, dbias, None


register_autograd("kiln::rms_norm", _rms_norm_backward, setup_context=_setup_rms_norm)
register_autograd("kiln::add_rms_norm", _add_rms_norm_backward, setup_context=_setup_add_rms_norm)
register_autograd("kiln::layer_norm", _layer_norm_backward, setup_context=_setup_layer_norm)
register_autograd(
    "kiln::add_layer_norm", _add_layer_norm_backward, setup_context=_setup_add_layer_norm
)
