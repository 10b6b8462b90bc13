"""Fake impl and autograd of fused_moe (torch/csrc/moe.cpp).

The backward (bf16, the training path) recomputes the expert path with torch ops and
differentiates it: the picks sorted by local expert, x's rows gathered, torch._grouped_mm for the
up and down projections, the activation, and the weighted sum per token. So no kiln kernel runs
in the backward yet (kiln's grouped GEMM has no transposed or k-grouped form); it costs one more
up and down projection than a backward that saved the intermediate. Picks with a bad id or map
value, and picks dropped by the map, get no gradient (they did not contribute).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.library import register_autograd, register_fake

from ._bad_count import fake_count
from ._grad import rows as _rows


@register_fake("kiln::fused_moe")
def _fused_moe_fake(x, w13, w2, topk_weights, topk_ids, activation, expert_map, w13_scale=None,
                    w2_scale=None, fp8_activations=False):
    torch._check(x.dim() == 2, lambda: "fused_moe: argument 'x': expected rank 2 [T, H]")
    return x.new_empty(x.shape), fake_count(x)


def _activate(h: torch.Tensor, activation: str, inter: int) -> torch.Tensor:
    if activation == "relu2":
        return torch.relu(h).square()
    gate, up = h[:, :inter], h[:, inter:]
    if activation == "swiglu":
        return F.silu(gate) * up
    form = "tanh" if activation == "gelu_tanh" else "none"
    return F.gelu(gate, approximate=form) * (up + 1)


def expert_path(x, w13, w2, topk_weights, topk_ids, activation, expert_map):
    """fused_moe's math in torch ops (differentiable): out [T, H] in x's dtype. Bad picks (ids
    outside [0, E), map values outside [-1, E_local)) and dropped ones contribute nothing; they go
    through expert 0 with weight 0, so nothing here synchronises with the device."""
    tokens, k = topk_ids.shape
    local_experts, inter = w2.shape[0], w2.shape[2]
    experts = expert_map.shape[0] if expert_map is not None else local_experts
    ids = topk_ids.long()
    ok = (ids >= 0) & (ids < experts)
    local = ids.clamp(0, experts - 1)
    if expert_map is not None:
        local = expert_map.long()[local]
    ok = ok & (local >= 0) & (local < local_experts)
    key = torch.where(ok, local, 0).flatten()
    order = torch.argsort(key, stable=True)
    counts = torch.zeros(local_experts, dtype=torch.int64, device=x.device)
    counts = counts.scatter_add(0, key, torch.ones_like(key))
    offs = counts.cumsum(0).to(torch.int32)
    token = order // k
    h = torch._grouped_mm(x[token], w13.transpose(1, 2), offs=offs)
    a = _activate(h.float(), activation, inter).to(x.dtype)
    y = torch._grouped_mm(a, w2.transpose(1, 2), offs=offs)
    scale = (topk_weights * ok).flatten()[order]
    out = torch.zeros(tokens, x.shape[1], dtype=torch.float32, device=x.device)
    return out.index_add(0, token, y.float() * scale[:, None]).to(x.dtype)


def _setup_fused_moe(ctx, inputs, output):
    x, w13, w2, topk_weights, topk_ids, activation, expert_map = inputs[:7]
    ctx.save_for_backward(x, w13, w2, topk_weights, topk_ids, expert_map)
    ctx.activation = activation


def _fused_moe_backward(ctx, grad_out, _grad_bad):
    x, w13, w2, topk_weights, topk_ids, expert_map = ctx.saved_tensors
    if x.dtype != torch.bfloat16 or w13.dtype != torch.bfloat16:
        raise RuntimeError("fused_moe backward: expected x, w13, w2 in bfloat16 (the training "
                           f"path), got x {x.dtype}, weights {w13.dtype}")
    needs = ctx.needs_input_grad[:4]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(n) for t, n in zip((x, w13, w2, topk_weights), needs)]
        out = expert_path(*leaves, topk_ids, ctx.activation, expert_map)
        wanted = [t for t, n in zip(leaves, needs) if n]
        grads = iter(torch.autograd.grad(out, wanted, _rows(grad_out), allow_unused=True,
                                         materialize_grads=True))
    return (*[next(grads) if n else None for n in needs], None, None, None, None, None, None)


register_autograd("kiln::fused_moe", _fused_moe_backward, setup_context=_setup_fused_moe)
