"""Fake impls of the routers (torch/csrc/router.cpp) and the router's autograd.

The router's weights are a function of the logits at the picked ids (the picks themselves, like
any top-k, carry no gradient; the selection bias and the group filter only choose them). The
backward recomputes that function in float64 with torch ops and differentiates it:
  softmax:     w = softmax(logits)[ids], divided by its sum when renormalize;
  deepseek_v3: w = sigmoid(logits)[ids] / sum * routed_scaling_factor;
  activation:  w = sqrt(softplus(logits))[ids] / sum.
No kiln kernel runs in the backward (it is T x E elementwise work).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.library import register_autograd, register_fake

from ._bad_count import fake_count
from ._grad import rows as _rows


@register_fake("kiln::router")
def _router_fake(logits, kind, k, renormalize, bias, n_group, topk_group, scaling):
    torch._check(logits.dim() == 2, lambda: "router: argument 'logits': expected rank 2 [T, E]")
    return (logits.new_empty((logits.shape[0], k), dtype=torch.float32),
            logits.new_empty((logits.shape[0], k), dtype=torch.int32))


@register_fake("kiln::dense_router")
def _dense_router_fake(x, gate, kind, k, renormalize, bias, n_group, topk_group, scaling):
    torch._check(x.dim() == 2, lambda: "dense_router: argument 'x': expected rank 2 [T, H]")
    rows = x.shape[0]
    return (x.new_empty((rows, k), dtype=torch.float32), x.new_empty((rows, k), dtype=torch.int32),
            x.new_empty((rows, gate.shape[0]), dtype=torch.float32))


@register_fake("kiln::hash_router")
def _hash_router_fake(token_ids, table, count_bad=True):
    rows, k = token_ids.shape[0], table.shape[1]
    return (token_ids.new_empty((rows, k), dtype=torch.float32),
            token_ids.new_empty((rows, k), dtype=torch.int32),
            fake_count(token_ids, count_bad))


def router_weights(logits: torch.Tensor, ids: torch.Tensor, kind: str, renormalize: bool,
                   scaling: float) -> torch.Tensor:
    """The routing weights at fixed picks ids [T, k], as a differentiable function of logits."""
    idx = ids.long()
    if kind == "softmax":
        w = torch.softmax(logits, -1).gather(-1, idx)
        return w / w.sum(-1, keepdim=True) if renormalize else w
    s = torch.sigmoid(logits) if kind == "deepseek_v3" else torch.sqrt(F.softplus(logits))
    w = s.gather(-1, idx)
    w = w / w.sum(-1, keepdim=True)
    return w * scaling if kind == "deepseek_v3" else w


def _setup_router(ctx, inputs, output):
    logits, kind, _k, renormalize, _bias, _n_group, _topk_group, scaling = inputs
    ctx.save_for_backward(logits, output[1])
    ctx.kind, ctx.renormalize, ctx.scaling = kind, renormalize, scaling


def _router_backward(ctx, grad_weights, _grad_ids):
    logits, ids = ctx.saved_tensors
    with torch.enable_grad():
        wide = logits.detach().double().requires_grad_()
        w = router_weights(wide, ids, ctx.kind, ctx.renormalize, ctx.scaling)
        (grad,) = torch.autograd.grad(w, wide, _rows(grad_weights).double())
    return grad.to(logits.dtype), None, None, None, None, None, None, None


register_autograd("kiln::router", _router_backward, setup_context=_setup_router)


# The dense router: the weights' gradient reaches the logits as the router's does, the logits'
# own gradient (an auxiliary loss on them) is added, and the logits = x gate^T product gives
# dx = g gate and dgate = g^T x (fp32 matmuls in torch).
def _setup_dense_router(ctx, inputs, output):
    x, gate, kind, _k, renormalize, _bias, _n_group, _topk_group, scaling = inputs
    ctx.save_for_backward(x, gate, output[1], output[2])
    ctx.kind, ctx.renormalize, ctx.scaling = kind, renormalize, scaling


def _dense_router_backward(ctx, grad_weights, _grad_ids, grad_logits):
    x, gate, ids, logits = ctx.saved_tensors
    g = torch.zeros_like(logits) if grad_logits is None else _rows(grad_logits).float()
    if grad_weights is not None:
        with torch.enable_grad():
            wide = logits.detach().double().requires_grad_()
            w = router_weights(wide, ids, ctx.kind, ctx.renormalize, ctx.scaling)
            (dl,) = torch.autograd.grad(w, wide, _rows(grad_weights).double())
        g = g + dl.float()
    dx = (g @ gate.float()).to(x.dtype) if ctx.needs_input_grad[0] else None
    dgate = (g.t() @ x.float()).to(gate.dtype) if ctx.needs_input_grad[1] else None
    return dx, dgate, None, None, None, None, None, None, None


register_autograd("kiln::dense_router", _dense_router_backward, setup_context=_setup_dense_router)
