"""kiln.sinkhorn_knopp through PyTorch: against a plain torch implementation in float64 (values
and gradients through the iterations by autograd), opcheck, torch.compile(fullgraph=True), errors."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]


def make(shape, device, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)


def torch_sinkhorn(logits, iters, eps):
    """The same math in plain torch: exp(logits - max), then rows, then columns, `iters` times."""
    a = torch.exp(logits - logits.amax(dim=(-2, -1), keepdim=True).detach())
    for _ in range(iters):
        a = a / (a.sum(-1, keepdim=True) + eps)
        a = a / (a.sum(-2, keepdim=True) + eps)
    return a


@pytest.mark.parametrize("n", [1, 4, 9])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch(device, n):
    logits = make((6, n, n), device, 1).requires_grad_()
    out = kiln.sinkhorn_knopp(logits, iters=20, eps=1e-6)
    l64 = logits.detach().double().requires_grad_()
    ref = torch_sinkhorn(l64, 20, 1e-6)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    dout = make((6, n, n), device, 2)
    (g,) = torch.autograd.grad(out, logits, dout)
    (g64,) = torch.autograd.grad(ref, l64, dout.double())
    torch.testing.assert_close(g.double(), g64, rtol=1e-4, atol=1e-4)


def _opcheck_cases(device):
    logits = make((3, 4, 4), device, 3).requires_grad_()
    dout = make((3, 4, 4), device, 4)
    ops = torch.ops.kiln
    return {
        "sinkhorn_knopp": (ops.sinkhorn_knopp, (logits, 10, 1e-6)),
        "sinkhorn_knopp_backward": (ops.sinkhorn_knopp_backward, (dout, logits.detach(), 10, 1e-6)),
    }


@pytest.mark.parametrize("case", list(_opcheck_cases("cpu")))
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def mix(h, streams):
        return kiln.sinkhorn_knopp(h * 0.5, iters=8) @ streams

    args = [make((5, 4, 4), device, 5), make((5, 4, 16), device, 6)]
    eager = [a.clone().requires_grad_() for a in args]
    comp = [a.clone().requires_grad_() for a in args]
    out = mix(*eager)
    out_c = torch.compile(mix, fullgraph=True, backend="aot_eager")(*comp)
    torch.testing.assert_close(out_c, out)
    g = make(out.shape, device, 7)
    out.backward(g)
    out_c.backward(g)
    for a, b in zip(comp, eager):
        torch.testing.assert_close(a.grad, b.grad)


def test_bad_input_is_reported():
    with pytest.raises(RuntimeError, match="sinkhorn_knopp: argument 'logits': expected shape"):
        kiln.sinkhorn_knopp(torch.zeros(2, 3, 4))
    with pytest.raises(RuntimeError, match="sinkhorn_knopp: argument 'iters': expected >= 1"):
        kiln.sinkhorn_knopp(torch.zeros(2, 4, 4), iters=0)
