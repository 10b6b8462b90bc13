"""Fake impls and autograd of the activation family (torch/csrc/activation.cpp).

Forward ops save their inputs; the backward ops recompute what they need from them. The packed
forms take and give gradients as one [..., 2N] tensor, like their input.
"""

from __future__ import annotations

import torch
from torch.library import register_autograd, register_fake

from ._grad import rows as _rows

_ops = torch.ops.kiln


def _like(t: torch.Tensor) -> torch.Tensor:
    return t.new_empty(t.shape)


def _half(packed: torch.Tensor) -> torch.Tensor:
    return packed.new_empty((*packed.shape[:-1], packed.shape[-1] // 2))


# ---- fake impls ----


@register_fake("kiln::relu2")
def _relu2_fake(x):
    return _like(x)


@register_fake("kiln::relu2_backward")
def _relu2_backward_fake(dy, x):
    return _like(x)


@register_fake("kiln::swiglu")
def _swiglu_fake(gate, up):
    return _like(gate)


@register_fake("kiln::swiglu_backward")
def _swiglu_backward_fake(dy, gate, up):
    return _like(gate), _like(gate)


@register_fake("kiln::swiglu_packed")
def _swiglu_packed_fake(gate_up):
    return _half(gate_up)


@register_fake("kiln::swiglu_packed_backward")
def _swiglu_packed_backward_fake(dy, gate_up):
    return _like(gate_up)


@register_fake("kiln::gelu_residual")
def _gelu_residual_fake(h, g, approximate):
    return _like(h)


@register_fake("kiln::gelu_residual_backward")
def _gelu_residual_backward_fake(dy, h, g, approximate):
    return _like(h), _like(h)


@register_fake("kiln::gelu_residual_packed")
def _gelu_residual_packed_fake(hg, approximate):
    return _half(hg)


@register_fake("kiln::gelu_residual_packed_backward")
def _gelu_residual_packed_backward_fake(dy, hg, approximate):
    return _like(hg)


# ---- autograd ----


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*[t for t in inputs if isinstance(t, torch.Tensor)])
    ctx.approximate = next((a for a in inputs if isinstance(a, str)), None)


def _relu2_backward(ctx, dy):
    (x,) = ctx.saved_tensors
    return _ops.relu2_backward(_rows(dy), x)


def _swiglu_backward(ctx, dy):
    gate, up = ctx.saved_tensors
    return _ops.swiglu_backward(_rows(dy), gate, up)


def _swiglu_packed_backward(ctx, dy):
    (gate_up,) = ctx.saved_tensors
    return _ops.swiglu_packed_backward(_rows(dy), gate_up)


def _gelu_residual_backward(ctx, dy):
    h, g = ctx.saved_tensors
    dh, dg = _ops.gelu_residual_backward(_rows(dy), h, g, ctx.approximate)
    return dh, dg, None


def _gelu_residual_packed_backward(ctx, dy):
    (hg,) = ctx.saved_tensors
    return _ops.gelu_residual_packed_backward(_rows(dy), hg, ctx.approximate), None


register_autograd("kiln::relu2", _relu2_backward, setup_context=_save_inputs)
register_autograd("kiln::swiglu", _swiglu_backward, setup_context=_save_inputs)
register_autograd("kiln::swiglu_packed", _swiglu_packed_backward, setup_context=_save_inputs)
register_autograd("kiln::gelu_residual", _gelu_residual_backward, setup_context=_save_inputs)
register_autograd(
    "kiln::gelu_residual_packed", _gelu_residual_packed_backward, setup_context=_save_inputs
)
