"""kiln.bias_dropout_add through PyTorch: the plain add when unmasked, the mask's rate and
determinism, the same mask on CPU and GPU, gradients (dx through the regenerated mask, dbias,
dresidual), opcheck, torch.compile(fullgraph=True), errors."""

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


@pytest.mark.parametrize("device", DEVICES)
def test_unmasked_is_the_add(device):
    x, b, r = make((4, 32), device, 1), make((32,), device, 2), make((4, 32), device, 3)
    want = (r.double() + (x.double() + b.double())).float()
    for p, training in ((0.0, True), (0.4, False)):
        out = kiln.bias_dropout_add(x, b, r, p, training=training, seed=5)
        torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_mask_rate_scale_and_determinism(device):
    p = 0.25
    ones, zeros = torch.ones(64, 1024, device=device), torch.zeros(64, 1024, device=device)
    out = kiln.bias_dropout_add(ones, None, zeros, p, seed=123, offset=4)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.01
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    assert torch.equal(out, kiln.bias_dropout_add(ones, None, zeros, p, seed=123, offset=4))
    assert not torch.equal(out, kiln.bias_dropout_add(ones, None, zeros, p, seed=123, offset=5))


@requires_cuda
def test_same_mask_on_cpu_and_gpu():
    ones = torch.ones(37, 129)
    zeros = torch.zeros(37, 129)
    cpu = kiln.bias_dropout_add(ones, None, zeros, 0.5, seed=99, offset=7)
    gpu = kiln.bias_dropout_add(ones.cuda(), None, zeros.cuda(), 0.5, seed=99, offset=7)
    assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_gradients(device):
    p, seed, offset = 0.3, 11, 2
    x = make((6, 40), device, 4).requires_grad_()
    b = make((40,), device, 5).requires_grad_()
    r = make((6, 40), device, 6).requires_grad_()
    out = kiln.bias_dropout_add(x, b, r, p, seed=seed, offset=offset)
    dout = make((6, 40), device, 7)
    dx, db, dr = torch.autograd.grad(out, (x, b, r), dout)
    scale = kiln.bias_dropout_add(
        torch.ones_like(x), None, torch.zeros_like(x), p, seed=seed, offset=offset
    )
    torch.testing.assert_close(dx, dout * scale, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(db, (dout * scale).sum(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dr, dout)


def _opcheck_cases(device):
    x = make((3, 5, 32), device, 10).requires_grad_()
    b = make((32,), device, 11).requires_grad_()
    r = make((3, 5, 32), device, 12).requires_grad_()
    dout = make((3, 5, 32), device, 13)
    ops = torch.ops.kiln
    return {
        "bias_dropout_add": (ops.bias_dropout_add, (x, b, r, 0.2, 7, 1, True)),
        "bias_dropout_add-nobias": (ops.bias_dropout_add, (x, None, r, 0.2, 7, 1, True)),
        "bias_dropout_add-eval": (ops.bias_dropout_add, (x, b, r, 0.2, 7, 1, False)),
        "bias_dropout_add_backward": (ops.bias_dropout_add_backward, (dout, 0.2, 7, 1, True, True)),
    }


@pytest.mark.parametrize("case", list(_opcheck_cases("cpu")))
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def block(x, b, r):
        return kiln.bias_dropout_add(x * 2, b, r, 0.1, seed=42, offset=3).relu()

    args = [make((4, 64), device, 20), make((64,), device, 21), make((4, 64), device, 22)]
    eager = [a.clone().requires_grad_() for a in args]
    comp = [a.clone().requires_grad_() for a in args]
    out = block(*eager)
    out_c = torch.compile(block, fullgraph=True, backend="aot_eager")(*comp)
    torch.testing.assert_close(out_c, out)
    g = make((4, 64), device, 23)
    out.backward(g)
    out_c.backward(g)
    for a, b in zip(comp, eager):
        torch.testing.assert_close(a.grad, b.grad)


def test_compile_without_seed_is_a_clear_error():
    torch._dynamo.reset()
    x, b, r = make((4, 64), "cpu", 30), make((64,), "cpu", 31), make((4, 64), "cpu", 32)
    fn = torch.compile(lambda x, b, r: kiln.bias_dropout_add(x, b, r, 0.1), fullgraph=True)
    with pytest.raises(Exception, match="argument 'seed': expected an int under torch.compile"):
        fn(x, b, r)


def test_bad_p_is_reported():
    x = torch.zeros(2, 4)
    with pytest.raises(RuntimeError, match="bias_dropout_add: argument 'p': expected"):
        kiln.bias_dropout_add(x, None, x, 1.5, seed=0)
