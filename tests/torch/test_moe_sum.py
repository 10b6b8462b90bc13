"""kiln.moe_sum through PyTorch: values and gradients against torch's own math in float64, weights
absent or float32, opcheck, torch.compile(fullgraph=True), errors."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]
CASES = [
    pytest.param("cpu", torch.float32, torch.float32, id="cpu-f32"),
    pytest.param("cpu", torch.bfloat16, torch.float32, id="cpu-bf16-w32"),
    pytest.param("cuda", torch.float32, torch.float32, id="cuda-f32", marks=requires_cuda),
    pytest.param("cuda", torch.bfloat16, torch.bfloat16, id="cuda-bf16", marks=requires_cuda),
    pytest.param("cuda", torch.bfloat16, torch.float32, id="cuda-bf16-w32", marks=requires_cuda),
]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def make(shape, device, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)


def rel_l2(out, ref):
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("k", [1, 8, 16])
@pytest.mark.parametrize("device,dtype,wdtype", CASES)
def test_matches_torch(device, dtype, wdtype, k):
    x = make((5, k, 96), device, 1, dtype).requires_grad_()
    w = make((5, k), device, 2, wdtype).requires_grad_()
    out = kiln.moe_sum(x, w)
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    ref = (x64 * w64.unsqueeze(-1)).sum(1)
    assert out.dtype == dtype and out.shape == (5, 96)
    assert rel_l2(out, ref) < TOL[dtype]
    dout = make((5, 96), device, 3, dtype)
    dx, dw = torch.autograd.grad(out, (x, w), dout)
    dx64, dw64 = torch.autograd.grad(ref, (x64, w64), dout.double())
    assert dw.dtype == wdtype
    assert rel_l2(dx, dx64) < TOL[dtype]
    assert rel_l2(dw, dw64) < TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_without_weights_is_the_plain_sum(device):
    x = make((3, 4, 16), device, 4)
    torch.testing.assert_close(kiln.moe_sum(x), x.sum(1), rtol=1e-6, atol=1e-6)


def _opcheck_cases(device):
    x = make((4, 3, 32), device, 5).requires_grad_()
    w = make((4, 3), device, 6).requires_grad_()
    dout = make((4, 32), device, 7)
    ops = torch.ops.kiln
    return {
        "moe_sum": (ops.moe_sum, (x, w)),
        "moe_sum-noweights": (ops.moe_sum, (x, None)),
        "moe_sum_backward": (ops.moe_sum_backward, (dout, x.detach(), w.detach(), True)),
    }


@pytest.mark.parametrize("case", list(_opcheck_cases("cpu")))
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def combine(x, logits):
        return kiln.moe_sum(x * 2, logits.softmax(-1)).relu()

    args = [make((6, 4, 32), device, 8), make((6, 4), device, 9)]
    eager = [a.clone().requires_grad_() for a in args]
    comp = [a.clone().requires_grad_() for a in args]
    out = combine(*eager)
    out_c = torch.compile(combine, fullgraph=True, backend="aot_eager")(*comp)
    torch.testing.assert_close(out_c, out)
    g = make(out.shape, device, 10)
    out.backward(g)
    out_c.backward(g)
    for a, b in zip(comp, eager):
        torch.testing.assert_close(a.grad, b.grad)


def test_bad_input_is_reported():
    with pytest.raises(RuntimeError, match=r"moe_sum: argument 'x': expected k = x.size\(1\)"):
        kiln.moe_sum(torch.zeros(2, 17, 8))
    with pytest.raises(RuntimeError, match="moe_sum: argument 'x': expected rank 3"):
        kiln.moe_sum(torch.zeros(2, 8))
    with pytest.raises(RuntimeError, match="moe_sum: argument 'weights': expected shape"):
        kiln.moe_sum(torch.zeros(2, 3, 8), torch.zeros(2, 2))
