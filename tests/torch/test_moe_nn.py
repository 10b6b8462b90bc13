"""kiln.nn.MoE (router + experts) against a plain PyTorch MoE in float64 with the same weights:
the forward, and the gradients of x, the gate, w13 and w2 through both the router's weights and
the experts; every router kind and a gated and an ungated activation. Also the autograd of the two
ops on their own (opcheck) and a training step that lowers the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kiln

HAS_CUDA = torch.cuda.is_available()


def plain_route(logits, k, router, renormalize, bias, n_group, topk_group, scaling):
    """(weights, ids) as a PyTorch user writes the router (float64, differentiable weights)."""
    if router == "softmax":
        scores = torch.softmax(logits, -1)
        selection = scores
    else:
        sigmoid = router == "deepseek_v3"
        scores = torch.sigmoid(logits) if sigmoid else torch.sqrt(F.softplus(logits))
        selection = scores + bias.double()
    if router == "deepseek_v3" and n_group > 1:
        grouped = selection.detach().view(logits.shape[0], n_group, -1)
        group_score = grouped.topk(2, dim=-1).values.sum(-1)
        best = group_score.topk(topk_group, -1).indices
        keep = torch.zeros_like(group_score).scatter_(1, best, 1)
        mask = keep[:, :, None].expand_as(grouped).reshape(logits.shape)
        selection = selection.masked_fill(mask == 0, float("-inf"))
    ids = selection.detach().topk(k, dim=-1).indices
    w = scores.gather(-1, ids)
    if router != "softmax" or renormalize:
        w = w / w.sum(-1, keepdim=True)
    if router == "deepseek_v3":
        w = w * scaling
    return w, ids


def plain_moe(moe: kiln.nn.MoE, x: torch.Tensor, params):
    gate, w13, w2 = params
    logits = x.double() @ gate.t()
    w, ids = plain_route(logits, moe.top_k, moe.router, moe.renormalize, moe.expert_bias,
                         moe.n_group, moe.topk_group, moe.routed_scaling_factor)
    out = torch.zeros(x.shape, dtype=torch.float64)
    inter = moe.intermediate
    for t in range(x.shape[0]):
        for j in range(moe.top_k):
            e = int(ids[t, j])
            h = w13[e] @ x[t].double()
            if moe.activation == "relu2":
                a = torch.relu(h) ** 2
            elif moe.activation == "swiglu":
                a = F.silu(h[:inter]) * h[inter:]
            else:
                form = "tanh" if moe.activation == "gelu_tanh" else "none"
                a = F.gelu(h[:inter], approximate=form) * (h[inter:] + 1)
            # kiln's contract rounds the intermediate to x's dtype (value only: identity gradient)
            a = a + (a.to(x.dtype).double() - a).detach()
            out[t] = out[t] + w[t, j] * (w2[e] @ a)
    return out, ids


CASES = [("softmax", "swiglu", {}), ("softmax", "relu2", {"renormalize": False}),
         ("deepseek_v3", "swiglu", {"n_group": 2, "topk_group": 1, "routed_scaling_factor": 2.5}),
         ("activation", "gelu_tanh", {})]


@pytest.mark.parametrize("router,activation,kw", CASES)
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA device"))])
def test_matches_plain_pytorch_moe(router, activation, kw, device):
    torch.manual_seed(0)
    t, h, i, e, k = 12, 32, 16, 8, 2
    moe = kiln.nn.MoE(h, i, e, k, activation=activation, router=router, **kw)
    if moe.expert_bias is not None:
        moe.expert_bias.copy_(torch.linspace(-0.05, 0.05, e))
    with torch.no_grad():  # larger gate: well-separated selections, no near ties
        moe.gate.mul_(8)
    moe = moe.to(device)
    x = torch.randn(t, h, dtype=torch.bfloat16).to(device).requires_grad_()
    out = moe(x)
    assert kiln.last_receipt().op == "fused_moe"
    assert kiln.last_receipt().backend == ("cuda" if device == "cuda" else "reference")
    g = torch.randn(t, h, dtype=torch.float64)
    (out.double().cpu() * g).sum().backward()

    params = [p.detach().cpu().double().requires_grad_() for p in (moe.gate, moe.w13, moe.w2)]
    xr = x.detach().cpu().double().requires_grad_()
    cpu_moe = moe.to("cpu")
    want, _ = plain_moe(cpu_moe, xr, params)
    (want * g).sum().backward()

    def close(got, ref, what, tol):
        scale = ref.abs().max().item()
        err = (got.detach().cpu().double() - ref.detach()).abs().max().item()
        assert err <= tol * scale, f"{what}: max error {err:.3g} over max {scale:.3g}"

    close(out, want, "out", 2e-2)
    close(x.grad, xr.grad, "dx", 3e-2)
    close(cpu_moe.gate.grad, params[0].grad, "dgate", 3e-2)
    close(cpu_moe.w13.grad, params[1].grad, "dw13", 3e-2)
    close(cpu_moe.w2.grad, params[2].grad, "dw2", 3e-2)


def test_router_and_fused_moe_autograd_opcheck():
    torch.manual_seed(1)
    logits = torch.randn(5, 16, dtype=torch.float32, requires_grad=True)
    torch.library.opcheck(torch.ops.kiln.router,
                          (logits, "softmax", 3, True, None, 1, 1, 1.0))
    x = torch.randn(4, 16, dtype=torch.bfloat16, requires_grad=True)
    w13 = (torch.randn(3, 16, 16) * 0.2).to(torch.bfloat16).requires_grad_()
    w2 = (torch.randn(3, 16, 8) * 0.2).to(torch.bfloat16).requires_grad_()
    weights = torch.rand(4, 2, requires_grad=True)
    ids = torch.tensor([[0, 1], [2, 0], [1, 1], [2, 2]], dtype=torch.int32)
    torch.library.opcheck(torch.ops.kiln.fused_moe, (x, w13, w2, weights, ids, "swiglu", None))


def test_dropped_picks_get_no_gradient():
    x = torch.randn(3, 16, dtype=torch.bfloat16, requires_grad=True)
    w13 = (torch.randn(2, 16, 16) * 0.2).to(torch.bfloat16).requires_grad_()
    w2 = (torch.randn(2, 16, 8) * 0.2).to(torch.bfloat16).requires_grad_()
    weights = torch.rand(3, 2, requires_grad=True)
    ids = torch.tensor([[0, 3], [1, 2], [3, 0]], dtype=torch.int32)
    emap = torch.tensor([-1, 1, -1, 0], dtype=torch.int32)  # globals 1 and 3 held here
    out = kiln.fused_moe(x, w13, w2, weights, ids, expert_map=emap)
    out.float().sum().backward()
    assert weights.grad[0, 0] == 0 and weights.grad[1, 1] == 0 and weights.grad[2, 1] == 0
    assert weights.grad[0, 1] != 0 and weights.grad[1, 0] != 0 and weights.grad[2, 0] != 0


def test_fp16_backward_is_an_error():
    x = torch.randn(2, 16, dtype=torch.float16, requires_grad=True)
    w13 = torch.randn(2, 16, 16, dtype=torch.float16)
    w2 = torch.randn(2, 16, 8, dtype=torch.float16)
    out = kiln.fused_moe(x, w13, w2, torch.rand(2, 1), torch.tensor([[0], [1]], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="fused_moe backward: expected x, w13, w2 in bfloat16"):
        out.float().sum().backward()


def test_a_training_step_lowers_the_loss():
    torch.manual_seed(2)
    moe = kiln.nn.MoE(16, 8, 4, 2)
    x = torch.randn(10, 16, dtype=torch.bfloat16)
    target = torch.randn(10, 16, dtype=torch.bfloat16)
    opt = torch.optim.SGD(moe.parameters(), lr=0.5)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = (moe(x).float() - target.float()).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
