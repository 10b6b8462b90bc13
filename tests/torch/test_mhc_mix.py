"""kiln.mhc_pre_mix / kiln.mhc_post_mix through PyTorch: values and gradients against plain
float64 torch math, gradcheck-style comparison, opcheck, expanded static H (the summed gradient),
the transposed H_res convention as a view, torch.compile(fullgraph=True), errors."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]
CASES = [
    pytest.param("cpu", torch.float32, id="cpu-f32"),
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
    pytest.param("cuda", torch.float32, id="cuda-f32", marks=requires_cuda),
    pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=requires_cuda),
    pytest.param("cuda", torch.float16, id="cuda-f16", marks=requires_cuda),
]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def make(shape, device, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)


def rel_l2(out, ref):
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def pre_math(x, h_pre):
    return torch.einsum("ti,tic->tc", h_pre, x)


def post_math(x, y, h_res, h_post):
    return torch.einsum("tji,tic->tjc", h_res, x) + h_post[..., None] * y[:, None]


def leaves(*ts):
    return [t.detach().clone().requires_grad_() for t in ts]


def as64(ts):
    return [t.detach().double().requires_grad_() for t in ts]


@pytest.mark.parametrize("n", [1, 3, 4, 8])
@pytest.mark.parametrize("device,dtype", CASES)
def test_post_mix_matches_torch(device, dtype, n):
    t, c = 5, 96
    x, y = make((t, n, c), device, 1, dtype), make((t, c), device, 2, dtype)
    h_res, h_post = make((t, n, n), device, 3), make((t, n), device, 4)
    ins = leaves(x, y, h_res, h_post)
    out = kiln.mhc_post_mix(*ins)
    ins64 = as64(ins)
    ref = post_math(*ins64)
    assert out.dtype == dtype and out.shape == (t, n, c)
    assert rel_l2(out, ref) < TOL[dtype]
    g = make((t, n, c), device, 5, dtype)
    grads = torch.autograd.grad(out, ins, g)
    grads64 = torch.autograd.grad(ref, ins64, g.double())
    for name, a, b, want_dtype in zip(["dx", "dy", "dh_res", "dh_post"], grads, grads64,
                                      [dtype, dtype, torch.float32, torch.float32]):
        assert a.dtype == want_dtype, name
        assert rel_l2(a, b) < TOL[dtype], name


@pytest.mark.parametrize("n", [1, 4, 8])
@pytest.mark.parametrize("device,dtype", CASES)
def test_pre_mix_matches_torch(device, dtype, n):
    t, c = 5, 96
    ins = leaves(make((t, n, c), device, 6, dtype), make((t, n), device, 7))
    out = kiln.mhc_pre_mix(*ins)
    ins64 = as64(ins)
    ref = pre_math(*ins64)
    assert out.dtype == dtype and out.shape == (t, c)
    assert rel_l2(out, ref) < TOL[dtype]
    g = make((t, c), device, 8, dtype)
    for a, b in zip(torch.autograd.grad(out, ins, g), torch.autograd.grad(ref, ins64, g.double())):
        assert rel_l2(a, b) < TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_match_finite_differences(device):
    """gradcheck-style: kiln's analytic f32 gradients against torch.autograd.gradcheck's own
    numerical Jacobian of the float64 math (kiln has no float64 dtype)."""
    t, n, c = 2, 3, 4
    x, y = make((t, n, c), device, 9), make((t, c), device, 10)
    h_res, h_post = make((t, n, n), device, 11), make((t, n), device, 12)
    h_pre = make((t, n), device, 13)
    for fn, math, args in [(kiln.mhc_post_mix, post_math, (x, y, h_res, h_post)),
                           (kiln.mhc_pre_mix, pre_math, (x, h_pre))]:
        ins, ins64 = leaves(*args), as64(args)
        g = make(fn(*ins).shape, device, 14)
        got = torch.autograd.grad(fn(*ins), ins, g)
        eps = 1e-6
        for k, a in enumerate(ins64):
            flat = a.detach().flatten()
            num = torch.empty_like(flat)
            for e in range(flat.numel()):
                up, down = [b.detach().clone() for b in ins64], [b.detach().clone() for b in ins64]
                up[k].view(-1)[e] += eps
                down[k].view(-1)[e] -= eps
                num[e] = ((math(*up) - math(*down)) * g.double()).sum() / (2 * eps)
            torch.testing.assert_close(got[k].double().flatten(), num, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_expanded_static_h_gets_the_summed_gradient(device):
    t, n, c = 6, 4, 32
    x, y = make((t, n, c), device, 15), make((t, c), device, 16)
    h_res, h_post, h_pre = leaves(make((n, n), device, 17), make((n,), device, 18),
                                  make((n,), device, 19))
    out = kiln.mhc_post_mix(x, y, h_res.expand(t, n, n), h_post.expand(t, n))
    h = kiln.mhc_pre_mix(out, h_pre.expand(t, n))
    ref64 = as64([h_res, h_post, h_pre])
    ref = pre_math(post_math(x.double(), y.double(), ref64[0].expand(t, n, n),
                             ref64[1].expand(t, n)), ref64[2].expand(t, n))
    torch.testing.assert_close(h.double(), ref, rtol=1e-5, atol=1e-5)
    g = make((t, c), device, 20)
    grads = torch.autograd.grad(h, [h_res, h_post, h_pre], g)
    grads64 = torch.autograd.grad(ref, ref64, g.double())
    for a, b in zip(grads, grads64):
        assert a.shape == b.shape
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_transposed_h_res_view_is_the_other_convention(device):
    """comb.transpose(-1, -2) @ streams (x'_j = sum_i comb[i, j] x_i) is h_res = comb.mT."""
    t, n, c = 3, 4, 16
    x, y = make((t, n, c), device, 21), make((t, c), device, 22)
    comb, h_post = make((t, n, n), device, 23), make((t, n), device, 24)
    out = kiln.mhc_post_mix(x, y, comb.transpose(-1, -2), h_post)
    ref = comb.transpose(-1, -2) @ x + h_post[..., None] * y[:, None]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_streams(device):
    """x as a stream-major buffer permuted to [T, n, C]: free token and stream strides."""
    t, n, c = 3, 4, 16
    x = make((n, t, c), device, 25).permute(1, 0, 2)
    y, h_res = make((t, c), device, 26), make((t, n, n), device, 27)
    h_post = make((t, n), device, 28)
    torch.testing.assert_close(kiln.mhc_post_mix(x, y, h_res, h_post),
                               post_math(x, y, h_res, h_post), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kiln.mhc_pre_mix(x, h_post), pre_math(x, h_post), rtol=1e-5,
                               atol=1e-5)


def _opcheck_cases(device):
    t, n, c = 4, 3, 32
    x, y = make((t, n, c), device, 29).requires_grad_(), make((t, c), device, 30).requires_grad_()
    h_res = make((t, n, n), device, 31).requires_grad_()
    h_post = make((t, n), device, 32).requires_grad_()
    ops = torch.ops.kiln
    d = [a.detach() for a in (x, y, h_res, h_post)]
    dh = make((t, c), device, 33)
    return {
        "mhc_pre_mix": (ops.mhc_pre_mix, (x, h_post)),
        "mhc_pre_mix_backward": (ops.mhc_pre_mix_backward, (dh, d[0], d[3], True)),
        "mhc_pre_mix_backward-no-dh": (ops.mhc_pre_mix_backward, (dh, d[0], d[3], False)),
        "mhc_post_mix": (ops.mhc_post_mix, (x, y, h_res, h_post)),
        "mhc_post_mix_backward": (ops.mhc_post_mix_backward, (make((t, n, c), device, 34), *d)),
    }


@pytest.mark.parametrize("case", list(_opcheck_cases("cpu")))
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def block(x, h_res_logits, h_post, h_pre):
        h = kiln.mhc_pre_mix(x, h_pre.expand(x.shape[0], -1))
        y = torch.tanh(h)
        h_res = h_res_logits.softmax(-1)
        return kiln.mhc_post_mix(x, y, h_res, h_post.expand(x.shape[0], -1))

    t, n, c = 6, 4, 32
    args = [make((t, n, c), device, 35), make((t, n, n), device, 36), make((n,), device, 37),
            make((n,), device, 38)]
    eager = [a.clone().requires_grad_() for a in args]
    comp = [a.clone().requires_grad_() for a in args]
    out = block(*eager)
    out_c = torch.compile(block, fullgraph=True, backend="aot_eager")(*comp)
    torch.testing.assert_close(out_c, out)
    g = make(out.shape, device, 39)
    out.backward(g)
    out_c.backward(g)
    for a, b in zip(comp, eager):
        torch.testing.assert_close(a.grad, b.grad)


@requires_cuda
def test_cuda_graph_replay_gives_the_same_bits():
    """Captured in a CUDA graph (no allocation, no sync inside the ops) and replayed on new
    inputs: every output bit-equal to an eager run's (the dH reductions are fixed-order)."""
    t, n, c = 64, 4, 512
    x, y = make((t, n, c), "cuda", 40, torch.bfloat16), make((t, c), "cuda", 41, torch.bfloat16)
    h_res, h_post = make((t, n, n), "cuda", 42), make((t, n), "cuda", 43)
    g = make((t, n, c), "cuda", 44, torch.bfloat16)
    ops = torch.ops.kiln

    def step():
        return (ops.mhc_post_mix(x, y, h_res, h_post), ops.mhc_pre_mix(x, h_post),
                *ops.mhc_post_mix_backward(g, x, y, h_res, h_post),
                *ops.mhc_pre_mix_backward(y, x, h_post, True))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for seed in (50, 60):
        x.copy_(make((t, n, c), "cuda", seed, torch.bfloat16))
        h_res.copy_(make((t, n, n), "cuda", seed + 1))
        graph.replay()
        for a, b in zip(captured, step()):
            assert torch.equal(a, b)


def test_bad_input_is_reported():
    x, y = torch.randn(2, 4, 8), torch.randn(2, 8)
    h_res, h_post = torch.randn(2, 4, 4), torch.randn(2, 4)
    post, pre = kiln.mhc_post_mix, kiln.mhc_pre_mix
    cases = [
        (lambda: post(torch.randn(2, 9, 8), y, torch.randn(2, 9, 9), torch.randn(2, 9)),
         r"mhc_post_mix: argument 'x': expected n = x.size\(1\) in \[1, 8\]"),
        (lambda: post(x, y, h_res.bfloat16(), h_post),
         "mhc_post_mix: argument 'h_res': expected dtype f32, got bf16"),
        (lambda: post(x, torch.randn(3, 8), h_res, h_post),
         r"mhc_post_mix: argument 'y': expected shape \[2, 8\]"),
        (lambda: post(x, y.bfloat16(), h_res, h_post),
         "mhc_post_mix: argument 'y': expected dtype f32, got bf16"),
        (lambda: pre(y, h_post), "mhc_pre_mix: argument 'x': expected rank 3"),
        (lambda: pre(x.transpose(1, 2).contiguous().transpose(1, 2), h_post),
         "mhc_pre_mix: argument 'x': expected a contiguous last dim"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call()
