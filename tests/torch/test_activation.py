"""kiln's activation family through PyTorch: opcheck on every op, values and gradients against
torch's own math (F.silu, F.gelu, relu) in float64, packed == split, torch.compile(fullgraph=True),
CUDA-graph capture, errors and receipts.

CPU tensors run kiln's float64 reference, CUDA tensors the kernels. Tests that need a GPU are
marked and skip without one.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

CASES = [
    pytest.param("cpu", torch.float32, id="cpu-f32"),
    pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
    pytest.param("cuda", torch.float32, id="cuda-f32", marks=requires_cuda),
    pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=requires_cuda),
    pytest.param("cuda", torch.float16, id="cuda-f16", marks=requires_cuda),
]
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
SHAPES = [(3, 17), (2, 5, 64), (4, 4095)]


def make(shape, dtype, device, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")  # NaN never passes
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


# torch's math, in float64: the independent oracle.
def ref_relu2(x, _):
    return torch.relu(x) ** 2


def ref_swiglu(gate, up):
    return F.silu(gate) * up


def ref_gelu_none(h, g):
    return F.gelu(h, approximate="none") * (g + 1)


def ref_gelu_tanh(h, g):
    return F.gelu(h, approximate="tanh") * (g + 1)


OPS = {
    "relu2": (lambda a, b: kiln.relu2(a), ref_relu2, False),
    "swiglu": (lambda a, b: kiln.swiglu(a, b), ref_swiglu, True),
    "gelu_residual-none": (lambda a, b: kiln.gelu_residual(a, b), ref_gelu_none, True),
    "gelu_residual-tanh": (
        lambda a, b: kiln.gelu_residual(a, b, approximate="tanh"),
        ref_gelu_tanh,
        True,
    ),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("device,dtype", CASES)
def test_matches_torch(device, dtype, name, shape):
    fn, ref, two = OPS[name]
    a = make(shape, dtype, device, seed=1).requires_grad_()
    b = make(shape, dtype, device, seed=2).requires_grad_()
    dy = make(shape, dtype, device, seed=3)
    y = fn(a, b)
    assert y.dtype == dtype and y.shape == a.shape
    assert kiln.last_receipt().backend == ("cuda" if device == "cuda" else "reference")
    a64 = a.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    y64 = ref(a64, b64)
    assert rel_l2(y, y64) < TOL[dtype]
    grads = torch.autograd.grad(y, (a, b) if two else (a,), dy)
    grads64 = torch.autograd.grad(y64, (a64, b64) if two else (a64,), dy.double())
    for got, want in zip(grads, grads64):
        assert got.dtype == dtype
        assert rel_l2(got, want) < TOL[dtype]


@pytest.mark.parametrize("approximate", [None, "none", "tanh"])
@pytest.mark.parametrize("device", DEVICES)
def test_packed_equals_split(device, approximate):
    packed = make((6, 2 * 40), torch.bfloat16, device, seed=4).requires_grad_()
    split = packed.detach().clone().requires_grad_()
    dy = make((6, 40), torch.bfloat16, device, seed=5)
    if approximate is None:
        y_packed = kiln.swiglu(packed)
        y_split = kiln.swiglu(split[:, :40], split[:, 40:])
    else:
        y_packed = kiln.gelu_residual(packed, approximate=approximate)
        y_split = kiln.gelu_residual(split[:, :40], split[:, 40:], approximate=approximate)
    assert torch.equal(y_packed, y_split)
    (g_packed,) = torch.autograd.grad(y_packed, packed, dy)
    (g_split,) = torch.autograd.grad(y_split, split, dy)
    assert torch.equal(g_packed, g_split)


def _opcheck_cases(device):
    def t(*shape, seed, grad=False):
        v = make(shape, torch.float32, device, seed=seed)
        return v.requires_grad_() if grad else v

    a, b, dy = t(3, 5, 32, seed=11, grad=True), t(3, 5, 32, seed=12, grad=True), t(3, 5, 32, seed=13)
    packed, dyp = t(3, 5, 64, seed=14, grad=True), t(3, 5, 32, seed=15)
    a_rows = t(15, 40, seed=16, grad=True)[:, 4:36]  # a row view: row stride 40
    ops = torch.ops.kiln
    return {
        "relu2": (ops.relu2, (a,)),
        "relu2-rowview": (ops.relu2, (a_rows,)),
        "relu2_backward": (ops.relu2_backward, (dy, a.detach())),
        "swiglu": (ops.swiglu, (a, b)),
        "swiglu_backward": (ops.swiglu_backward, (dy, a.detach(), b.detach())),
        "swiglu_packed": (ops.swiglu_packed, (packed,)),
        "swiglu_packed_backward": (ops.swiglu_packed_backward, (dyp, packed.detach())),
        "gelu_residual": (ops.gelu_residual, (a, b, "none")),
        "gelu_residual-tanh": (ops.gelu_residual, (a, b, "tanh")),
        "gelu_residual_backward": (ops.gelu_residual_backward, (dy, a.detach(), b.detach(), "tanh")),
        "gelu_residual_packed": (ops.gelu_residual_packed, (packed, "none")),
        "gelu_residual_packed_backward": (
            ops.gelu_residual_packed_backward,
            (dyp, packed.detach(), "none"),
        ),
    }


OPCHECK_NAMES = list(_opcheck_cases("cpu"))


@pytest.mark.parametrize("case", OPCHECK_NAMES)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


def test_every_op_has_an_opcheck_case():
    families = ("relu2", "swiglu", "gelu_residual")
    defined = {
        name.split("::")[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("kiln::") and name.split("::")[1].startswith(families)
    }
    checked = {case.split("-")[0] for case in OPCHECK_NAMES}
    assert defined and defined <= checked, defined - checked


def _mlp(x, w_up, w_down):
    """A gated MLP with each activation, with glue between them."""
    gate_up = x @ w_up
    h = kiln.swiglu(gate_up) + kiln.relu2(gate_up[..., :32])
    return kiln.gelu_residual(h, h * 0.5, approximate="tanh") @ w_down


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device, backend):
    torch._dynamo.reset()
    args = [
        make((4, 16), torch.float32, device, seed=30),
        make((16, 64), torch.float32, device, seed=31, scale=0.3),
        make((32, 8), torch.float32, device, seed=32, scale=0.3),
    ]
    eager_args = [a.clone().requires_grad_() for a in args]
    compiled_args = [a.clone().requires_grad_() for a in args]
    out = _mlp(*eager_args)
    out_c = torch.compile(_mlp, fullgraph=True, backend=backend)(*compiled_args)
    torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-5)
    g = make(out.shape, torch.float32, device, seed=33)
    out.backward(g)
    out_c.backward(g)
    for i, (a, b) in enumerate(zip(compiled_args, eager_args)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=f"grad of arg {i}")


@requires_cuda
def test_cuda_graph_capture_and_replay():
    shape = (64, 2 * 512)
    gate_up = make(shape, torch.bfloat16, "cuda", seed=40)
    dy = make((64, 512), torch.bfloat16, "cuda", seed=41)
    ops = torch.ops.kiln

    def step():
        y = ops.swiglu_packed(gate_up)
        d = ops.swiglu_packed_backward(dy, gate_up)
        z = ops.gelu_residual_packed(gate_up, "tanh")
        return y, d, z, ops.relu2(y)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for seed in (50, 60):
        gate_up.copy_(make(shape, torch.bfloat16, "cuda", seed=seed))
        dy.copy_(make((64, 512), torch.bfloat16, "cuda", seed=seed + 1))
        graph.replay()
        torch.cuda.synchronize()
        for i, (got, want) in enumerate(zip(captured, step())):
            assert torch.equal(got, want), f"output {i} differs after replay (seed {seed})"


BAD = [
    pytest.param(
        lambda: kiln.swiglu(torch.zeros(2, 4), torch.zeros(2, 5)), "swiglu", "up", id="shape"
    ),
    pytest.param(
        lambda: kiln.swiglu(torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.bfloat16)),
        "swiglu",
        "up",
        id="dtype",
    ),
    pytest.param(lambda: kiln.relu2(torch.zeros(2, 4, dtype=torch.float64)), "relu2", "x", id="f64"),
    pytest.param(lambda: kiln.relu2(torch.zeros(4, 2).t()), "relu2", "x", id="transposed"),
    pytest.param(lambda: kiln.swiglu(torch.zeros(2, 5)), "split_halves", "packed", id="odd-packed"),
    pytest.param(
        lambda: kiln.gelu_residual(torch.zeros(2, 4), torch.zeros(2, 4), approximate="fast"),
        "gelu_residual",
        "approximate",
        id="approximate",
    ),
]


@pytest.mark.parametrize("call,op,arg", BAD)
def test_bad_input_message(call, op, arg):
    with pytest.raises(RuntimeError, match=f"{op}: argument '{arg}': expected"):
        call()


@pytest.mark.parametrize("device", DEVICES)
def test_receipts(device):
    x = make((2, 8), torch.float32, device, seed=70)
    kiln.swiglu(x, x)
    r = kiln.last_receipt()
    assert r.op == "swiglu"
    assert r.backend == ("cuda" if device == "cuda" else "reference")
    if device == "cuda":
        assert r.variant.startswith("activation_forward<swiglu,f32")
