"""kiln's normalization family through PyTorch: opcheck on every op, values and gradients against
torch's own RMSNorm/LayerNorm (+ residual add), the kiln.nn modules, torch.compile(fullgraph=True),
CUDA-graph capture and replay, error messages and receipts.

CPU tensors run kiln's float64 reference, CUDA tensors the kernels. kiln takes float32, bfloat16
and float16 (never float64), so the CPU tests run kiln in float32 (and bfloat16) against torch in
float64 on the same values. Tests that need a GPU are marked and skip without one.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]

# (device, x dtype, weight/bias dtype). float32 parameters with low-precision activations are the
# mixed case kiln allows.
CASES = [
    pytest.param("cpu", torch.float32, torch.float32, id="cpu-f32"),
    pytest.param("cpu", torch.bfloat16, torch.bfloat16, id="cpu-bf16"),
    pytest.param("cpu", torch.bfloat16, torch.float32, id="cpu-bf16-f32params"),
    pytest.param("cuda", torch.float32, torch.float32, id="cuda-f32", marks=requires_cuda),
    pytest.param("cuda", torch.bfloat16, torch.bfloat16, id="cuda-bf16", marks=requires_cuda),
    pytest.param(
        "cuda", torch.bfloat16, torch.float32, id="cuda-bf16-f32params", marks=requires_cuda
    ),
    pytest.param("cuda", torch.float16, torch.float16, id="cuda-f16", marks=requires_cuda),
]

# Bound on the relative L2 error ||out - ref|| / ||ref|| against float64 (DESIGN.md's table).
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}

# Shapes [..., N]: a prime hidden size, a 3-D batch, hidden 4095 (not a multiple of any vector
# width). Gradients need N >= 2 (for N = 1 LayerNorm's dx is 0 and a relative error means nothing).
SHAPES = [(3, 17), (2, 5, 64), (4, 4095)]

# (kind, has weight, has bias): the parameter combinations each norm takes.
VARIANTS = [
    pytest.param("rms", False, False, id="rms"),
    pytest.param("rms", True, False, id="rms-weight"),
    pytest.param("layer", False, False, id="layer"),
    pytest.param("layer", True, False, id="layer-weight"),
    pytest.param("layer", False, True, id="layer-bias"),
    pytest.param("layer", True, True, id="layer-weight-bias"),
]


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")  # NaN never passes
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def assert_close(name: str, out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    err = rel_l2(out, ref)
    if err > tol:
        diff = (out.double() - ref.double()).abs().flatten()
        worst = diff.topk(min(5, diff.numel())).indices.tolist()
        pairs = [(i, out.flatten()[i].item(), ref.flatten()[i].item()) for i in worst]
        raise AssertionError(
            f"{name}: relative L2 error {err:.3g} > {tol:g}; worst (index, got, want): {pairs}"
        )


def make(shape, dtype, device, *, seed=0, scale=1.0, shift=0.0):
    """Random values (never zeros) made on the CPU from a fixed seed, then moved."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(
        device=device, dtype=dtype
    )


def kiln_norm(kind, x, residual, weight, bias, eps):
    """(y, residual_out or None) through the kiln functional API."""
    if kind == "rms":
        if residual is None:
            return kiln.rms_norm(x, weight, eps), None
        return kiln.add_rms_norm(x, residual, weight, eps)
    if residual is None:
        return kiln.layer_norm(x, weight, bias, eps), None
    return kiln.add_layer_norm(x, residual, weight, bias, eps)


def torch_norm(kind, x, residual, weight, bias, eps):
    """The same through torch's own F.rms_norm / F.layer_norm."""
    s = x if residual is None else x + residual
    n = x.shape[-1]
    if kind == "rms":
        y = F.rms_norm(s, (n,), weight, eps)
    else:
        y = F.layer_norm(s, (n,), weight, bias, eps)
    return y, (None if residual is None else s)


# ---------------------------------------------------------------------------------------------
# values and gradients against torch


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "add"])
@pytest.mark.parametrize("kind,has_weight,has_bias", VARIANTS)
@pytest.mark.parametrize("device,dtype,param_dtype", CASES)
def test_matches_torch(device, dtype, param_dtype, kind, has_weight, has_bias, residual, shape):
    eps = 1e-6 if kind == "rms" else 1e-5
    n = shape[-1]
    inputs = {
        "x": make(shape, dtype, device, seed=1, shift=0.5),
        "residual": make(shape, dtype, device, seed=2) if residual else None,
        "weight": make((n,), param_dtype, device, seed=3, scale=0.5, shift=1.0)
        if has_weight
        else None,
        "bias": make((n,), param_dtype, device, seed=4) if has_bias else None,
    }
    leaves = {k: v.requires_grad_() for k, v in inputs.items() if v is not None}
    # The reference: float64 copies of the same values.
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in leaves.items()}
    ref_inputs = {k: ref_leaves.get(k) for k in inputs}

    y, residual_out = kiln_norm(kind, eps=eps, **inputs)
    y_ref, residual_out_ref = torch_norm(kind, eps=eps, **ref_inputs)

    tol = TOL[dtype]
    assert y.dtype == dtype and y.is_contiguous()
    assert_close("y", y, y_ref, tol)
    if residual:
        assert residual_out.dtype == dtype
        # residual_out = x + residual rounded to x's dtype: exactly torch's own add.
        assert torch.equal(residual_out, inputs["x"] + inputs["residual"])

    # Random incoming gradients for both outputs (residual_out's enters kiln as dresidual).
    dy = make(shape, dtype, device, seed=5)
    outs, douts = [y], [dy]
    outs_ref, douts_ref = [y_ref], [dy.double()]
    if residual:
        dres = make(shape, dtype, device, seed=6)
        outs += [residual_out]
        douts += [dres]
        outs_ref += [residual_out_ref]
        douts_ref += [dres.double()]
    grads = torch.autograd.grad(outs, list(leaves.values()), douts)
    grads_ref = torch.autograd.grad(outs_ref, list(ref_leaves.values()), douts_ref)
    for name, g, g_ref in zip(leaves, grads, grads_ref):
        assert g.dtype == leaves[name].dtype, f"d{name} dtype"
        # dweight/dbias sum over rows: allow the fp32 accumulation of a long sum on CUDA.
        assert_close(f"d{name}", g, g_ref, tol if name in ("x", "residual") else 2 * tol)


@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("device", DEVICES)
def test_strided_rows(device, kind):
    """A row view into a wider buffer is taken as it is; outputs are fresh and contiguous."""
    buf = make((6, 72), torch.float32, device, seed=7).requires_grad_()
    x = buf[:, 3:67]  # row stride 72, last dim contiguous
    w = make((64,), torch.float32, device, seed=8, shift=1.0)
    y, _ = kiln_norm(kind, x, None, w, None, 1e-5)
    y_ref, _ = torch_norm(kind, x.detach().double(), None, w.double(), None, 1e-5)
    assert y.is_contiguous()
    assert_close("y", y, y_ref, TOL[torch.float32])
    y.sum().backward()  # the stride-0 gradient of sum() is made contiguous for kiln
    assert buf.grad[:, :3].abs().sum() == 0 and buf.grad[:, 3:67].abs().sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_empty_rows(device):
    """M = 0 rows is a no-op, forward and backward."""
    x = torch.randn(0, 5, 32, device=device, requires_grad=True)
    w = torch.ones(32, device=device, requires_grad=True)
    y, ro = kiln.add_rms_norm(x, x, w)
    assert y.shape == (0, 5, 32) and ro.shape == (0, 5, 32)
    (y.sum() + ro.sum()).backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("device", DEVICES)
def test_unused_outputs(device):
    """Gradients when only one of (y, residual_out) is used: the other's is None or zero."""
    x = make((4, 32), torch.float32, device, seed=9).requires_grad_()
    r = make((4, 32), torch.float32, device, seed=10).requires_grad_()
    _, ro = kiln.add_layer_norm(x, r)
    (gx,) = torch.autograd.grad(ro.sum(), [x])
    torch.testing.assert_close(gx, torch.ones_like(x))  # y unused: only the add's gradient
    y, _ = kiln.add_layer_norm(x, r)
    g = make((4, 32), torch.float32, device, seed=11)
    gx, gr = torch.autograd.grad(y, [x, r], g)  # residual_out unused: dresidual is None
    y_ref, _ = torch_norm("layer", x.double(), r.double(), None, None, 1e-5)
    (gx_ref,) = torch.autograd.grad(y_ref, [x], g.double())
    assert_close("dx", gx, gx_ref, 1e-5)
    assert torch.equal(gx, gr)


# ---------------------------------------------------------------------------------------------
# opcheck: schema, fake impl, autograd registration, AOT dispatch with dynamic shapes


def _opcheck_cases(device):
    def t(*shape, seed, grad=False, shift=0.0):
        v = make(shape, torch.float32, device, seed=seed, shift=shift)
        return v.requires_grad_() if grad else v

    x, r = t(3, 5, 32, seed=11, grad=True), t(3, 5, 32, seed=12, grad=True)
    w, b = t(32, seed=13, grad=True, shift=1.0), t(32, seed=14, grad=True)
    dy, xs, dr = t(3, 5, 32, seed=15), t(3, 5, 32, seed=16), t(3, 5, 32, seed=17)
    wd, bd = t(32, seed=18, shift=1.0), t(32, seed=19)
    x_rows = t(15, 40, seed=20, grad=True)[:, 4:36]  # a row view: row stride 40
    ops = torch.ops.kiln
    return {
        "rms_norm": (ops.rms_norm, (x, w, 1e-6)),
        "rms_norm-noweight": (ops.rms_norm, (x, None, 1e-6)),
        "rms_norm-rowview": (ops.rms_norm, (x_rows, w, 1e-6)),
        "add_rms_norm": (ops.add_rms_norm, (x, r, w, 1e-6)),
        "add_rms_norm-noweight": (ops.add_rms_norm, (x, r, None, 1e-6)),
        "layer_norm": (ops.layer_norm, (x, w, b, 1e-5)),
        "layer_norm-noparams": (ops.layer_norm, (x, None, None, 1e-5)),
        "layer_norm-weight": (ops.layer_norm, (x, w, None, 1e-5)),
        "add_layer_norm": (ops.add_layer_norm, (x, r, w, b, 1e-5)),
        "add_layer_norm-bias": (ops.add_layer_norm, (x, r, None, b, 1e-5)),
        "add_layer_norm-rowview": (ops.add_layer_norm, (x_rows, x_rows, w, b, 1e-5)),
        "rms_norm_backward": (ops.rms_norm_backward, (dy, xs, wd, 1e-6, None, True)),
        "rms_norm_backward-dresidual": (ops.rms_norm_backward, (dy, xs, wd, 1e-6, dr, False)),
        "rms_norm_backward-noweight": (ops.rms_norm_backward, (dy, xs, None, 1e-6, dr, False)),
        "layer_norm_backward": (
            ops.layer_norm_backward,
            (dy, xs, wd, bd, 1e-5, dr, True, True),
        ),
        "layer_norm_backward-bias": (
            ops.layer_norm_backward,
            (dy, xs, None, bd, 1e-5, None, False, True),
        ),
        "layer_norm_backward-noparams": (
            ops.layer_norm_backward,
            (dy, xs, None, None, 1e-5, None, False, False),
        ),
    }


OPCHECK_NAMES = list(_opcheck_cases("cpu"))


@pytest.mark.parametrize("case", OPCHECK_NAMES)
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


def test_every_op_has_an_opcheck_case():
    defined = {
        name.split("::")[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("kiln::") and "norm" in name
    }
    checked = {case.split("-")[0] for case in OPCHECK_NAMES}
    assert defined and defined <= checked, defined - checked


# ---------------------------------------------------------------------------------------------
# nn modules


@pytest.mark.parametrize("device", DEVICES)
def test_rms_norm_module(device):
    m = kiln.nn.RMSNorm(48, eps=1e-5, device=device)
    assert m.weight.shape == (48,) and m.weight.dtype == torch.float32
    assert torch.equal(m.weight.detach(), torch.ones(48, device=device))
    assert "48, eps=1e-05" in repr(m)
    ref = torch.nn.RMSNorm(48, eps=1e-5, device=device, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(make((48,), torch.float32, device, seed=20, shift=1.0))
        ref.weight.copy_(m.weight)
    x = make((2, 3, 48), torch.float32, device, seed=21).requires_grad_()
    x_ref = x.detach().double().requires_grad_()
    y, y_ref = m(x), ref(x_ref)
    assert_close("y", y, y_ref, 1e-5)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    assert_close("dx", x.grad, x_ref.grad, 1e-5)
    assert_close("dweight", m.weight.grad, ref.weight.grad, 1e-5)

    # With a residual: (y, residual_out), fused.
    r = make((2, 3, 48), torch.float32, device, seed=22)
    y2, ro = m(x, r)
    assert torch.equal(ro, x + r)
    torch.testing.assert_close(y2, m(x + r))

    plain = kiln.nn.RMSNorm(48, elementwise_affine=False, device=device)
    assert plain.weight is None and list(plain.parameters()) == []
    torch.testing.assert_close(plain(x), F.rms_norm(x, (48,), None, 1e-6))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("device", DEVICES)
def test_layer_norm_module(device, bias):
    m = kiln.nn.LayerNorm(40, bias=bias, device=device)
    ref = torch.nn.LayerNorm(40, bias=bias, device=device, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(make((40,), torch.float32, device, seed=23, shift=1.0))
        ref.weight.copy_(m.weight)
        if bias:
            m.bias.copy_(make((40,), torch.float32, device, seed=24))
            ref.bias.copy_(m.bias)
    assert (m.bias is not None) == bias
    x = make((5, 40), torch.float32, device, seed=25).requires_grad_()
    x_ref = x.detach().double().requires_grad_()
    y, y_ref = m(x), ref(x_ref)
    assert_close("y", y, y_ref, 1e-5)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    assert_close("dx", x.grad, x_ref.grad, 1e-5)
    assert_close("dweight", m.weight.grad, ref.weight.grad, 1e-5)
    if bias:
        assert_close("dbias", m.bias.grad, ref.bias.grad, 1e-5)

    y2, ro = m(x, x)
    torch.testing.assert_close(y2, m(x + x))
    plain = kiln.nn.LayerNorm(40, elementwise_affine=False, device=device)
    assert plain.weight is None and plain.bias is None
    torch.testing.assert_close(plain(x), F.layer_norm(x, (40,), eps=1e-5))


@requires_cuda
def test_module_bf16_activations_f32_weight():
    m = kiln.nn.RMSNorm(256, device="cuda")  # float32 weight
    x = make((8, 256), torch.bfloat16, "cuda", seed=26).requires_grad_()
    y = m(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert m.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------
# torch.compile


def _block(x, r, w1, w2, b2):
    """A pre-norm block boundary and a post-norm: every forward op, with glue between them."""
    y, ro = kiln.add_rms_norm(x, r, w1)
    h = kiln.rms_norm(F.silu(y), None)
    z, ro2 = kiln.add_layer_norm(h, ro, w2, b2)
    return kiln.layer_norm(z * 2 + ro2, w2, None) + ro


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device, backend):
    torch._dynamo.reset()
    args = [
        make((4, 64), torch.float32, device, seed=30),
        make((4, 64), torch.float32, device, seed=31),
        make((64,), torch.float32, device, seed=32, shift=1.0),
        make((64,), torch.float32, device, seed=33, shift=1.0),
        make((64,), torch.float32, device, seed=34),
    ]
    eager_args = [a.clone().requires_grad_() for a in args]
    compiled_args = [a.clone().requires_grad_() for a in args]
    out = _block(*eager_args)
    compiled = torch.compile(_block, fullgraph=True, backend=backend)
    out_c = compiled(*compiled_args)
    torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-5)
    g = make((4, 64), torch.float32, device, seed=35)
    out.backward(g)
    out_c.backward(g)
    for i, (a, b) in enumerate(zip(compiled_args, eager_args)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=f"grad of arg {i}")


# ---------------------------------------------------------------------------------------------
# CUDA graphs


@requires_cuda
def test_cuda_graph_capture_and_replay():
    """Forward and backward ops captured into one graph replay to the same bits as eager (kiln
    never allocates or synchronises; the workspace comes from the graph's pool)."""
    shape = (64, 1024)
    x = make(shape, torch.bfloat16, "cuda", seed=40)
    r = make(shape, torch.bfloat16, "cuda", seed=41)
    dy = make(shape, torch.bfloat16, "cuda", seed=42)
    w = make((1024,), torch.float32, "cuda", seed=43, shift=1.0)
    b = make((1024,), torch.float32, "cuda", seed=44)
    ops = torch.ops.kiln

    def step():
        y, ro = ops.add_rms_norm(x, r, w, 1e-6)
        dx, dw = ops.rms_norm_backward(dy, ro, w, 1e-6, dy, True)
        z, ro2 = ops.add_layer_norm(y, ro, w, b, 1e-5)
        dz, dwl, dbl = ops.layer_norm_backward(dy, ro2, w, b, 1e-5, None, True, True)
        return y, ro, dx, dw, z, ro2, dz, dwl, dbl

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    assert kiln.last_receipt().backend == "cuda"
    for seed in (50, 60):
        for i, t in enumerate((x, r, dy)):
            t.copy_(make(shape, torch.bfloat16, "cuda", seed=seed + i))
        graph.replay()
        torch.cuda.synchronize()
        for i, (got, want) in enumerate(zip(captured, step())):
            assert torch.equal(got, want), f"output {i} differs after replay (seed {seed})"


@requires_cuda
# make_graphed_callables warms up on a side stream, whose AccumulateGrad nodes for the module's
# parameters its static graph keeps alive: torch warns about that stream, not about kiln.
@pytest.mark.filterwarnings("ignore:The AccumulateGrad node's stream does not match:UserWarning")
def test_cuda_graphed_module_training_step():
    """The autograd path (forward + backward through kiln.nn) under make_graphed_callables."""
    m = kiln.nn.LayerNorm(512, device="cuda")
    with torch.no_grad():
        m.weight.copy_(make((512,), torch.float32, "cuda", seed=69, shift=1.0))
    eager = copy.deepcopy(m)  # its own parameters, so eager and graphed autograd stay apart
    x = make((32, 512), torch.float32, "cuda", seed=70).requires_grad_()
    graphed = torch.cuda.make_graphed_callables(m, (x,))
    for seed in (71, 72):
        xg = make((32, 512), torch.float32, "cuda", seed=seed).requires_grad_()
        xe = xg.detach().clone().requires_grad_()
        m.zero_grad(set_to_none=True)
        eager.zero_grad(set_to_none=True)
        graphed(xg).square().sum().backward()
        eager(xe).square().sum().backward()
        for name, a, b in (
            ("dx", xg.grad, xe.grad),
            ("dweight", m.weight.grad, eager.weight.grad),
            ("dbias", m.bias.grad, eager.bias.grad),
        ):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


# ---------------------------------------------------------------------------------------------
# errors: kiln's message (op, argument, expected, given) reaches Python intact


def _x(*shape, dtype=torch.float32, device="cpu"):
    return make(shape, dtype, device, seed=80)


ops = torch.ops.kiln
ERROR_CASES = [
    # (id, call, op, argument, a piece of the message naming what was given)
    ("mismatched-N", lambda: kiln.add_rms_norm(_x(4, 64), _x(4, 32)), "add_rms_norm", "residual",
     "got shape [4, 32]"),
    ("mismatched-rows", lambda: kiln.add_layer_norm(_x(4, 64), _x(5, 64)), "add_layer_norm",
     "residual", "got shape [5, 64]"),
    ("weight-size", lambda: kiln.rms_norm(_x(4, 64), _x(32)), "rms_norm", "weight",
     "expected shape [64], got shape [32]"),
    ("int32-x", lambda: kiln.rms_norm(torch.ones(4, 64, dtype=torch.int32)), "rms_norm", "x",
     "expected dtype in {f32, bf16, f16}, got i32"),
    ("float64-x", lambda: kiln.layer_norm(_x(4, 64, dtype=torch.float64)), "layer_norm", "x",
     "got torch.float64"),
    ("float64-weight", lambda: kiln.rms_norm(_x(4, 64), _x(64, dtype=torch.float64)), "rms_norm",
     "weight", "got torch.float64"),
    ("residual-dtype", lambda: kiln.add_rms_norm(_x(4, 64), _x(4, 64, dtype=torch.bfloat16)),
     "add_rms_norm", "residual", "expected dtype f32, got bf16"),
    ("weight-dtype", lambda: kiln.rms_norm(_x(4, 64, dtype=torch.float16),
                                           _x(64, dtype=torch.bfloat16)), "rms_norm", "weight",
     "got bf16"),
    ("bias-dtype", lambda: kiln.layer_norm(_x(4, 64), _x(64), _x(64, dtype=torch.bfloat16)),
     "layer_norm", "bias", "expected dtype f32, got bf16"),
    ("transposed-x", lambda: kiln.layer_norm(_x(64, 4).t()), "layer_norm", "x",
     "expected a contiguous last dim"),
    ("strided-weight", lambda: kiln.rms_norm(_x(4, 64), _x(64, 2)[:, 0]), "rms_norm", "weight",
     "expected a contiguous vector"),
    ("rank-0", lambda: kiln.rms_norm(torch.tensor(1.0)), "rms_norm", "x", "expected rank >= 1"),
    ("rank-9", lambda: kiln.rms_norm(torch.ones([1] * 8 + [4])), "rms_norm", "x",
     "expected rank <= 8, got rank 9"),
    ("empty-N", lambda: kiln.rms_norm(torch.ones(4, 0)), "rms_norm", "x", "last dim N >= 1"),
    ("negative-eps", lambda: kiln.layer_norm(_x(4, 64), eps=-1.0), "layer_norm", "eps",
     "a finite value >= 0"),
    ("dweight-without-weight",
     lambda: ops.rms_norm_backward(_x(4, 64), _x(4, 64), None, 1e-6, None, True),
     "rms_norm_backward", "need_dweight", "expected false when weight is None"),
    ("dbias-without-bias",
     lambda: ops.layer_norm_backward(_x(4, 64), _x(4, 64), _x(64), None, 1e-5, None, True, True),
     "layer_norm_backward", "need_dbias", "expected false when bias is None"),
    ("dresidual-shape",
     lambda: ops.rms_norm_backward(_x(4, 64), _x(4, 64), None, 1e-6, _x(2, 64), False),
     "rms_norm_backward", "dresidual", "got shape [2, 64]"),
    ("dy-dtype",
     lambda: ops.layer_norm_backward(_x(4, 64, dtype=torch.float16), _x(4, 64), None, None, 1e-5,
                                     None, False, False),
     "layer_norm_backward", "dy", "expected dtype f32, got f16"),
]


@pytest.mark.parametrize(
    "call,op,arg,given", [pytest.param(*c[1:], id=c[0]) for c in ERROR_CASES]
)
def test_bad_input_message(call, op, arg, given):
    with pytest.raises(RuntimeError) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(f"{op}: argument '{arg}': expected "), msg
    assert given in msg, msg


def test_error_message_is_kilns_verbatim():
    with pytest.raises(RuntimeError) as info:
        kiln.rms_norm(torch.ones(2, 8, dtype=torch.int32))
    assert str(info.value) == "rms_norm: argument 'x': expected dtype in {f32, bf16, f16}, got i32"


@requires_cuda
def test_bad_input_devices():
    x = _x(4, 64, device="cuda")
    with pytest.raises(RuntimeError, match=r"rms_norm: argument 'weight': expected a tensor on "
                                           r"cuda:0, got one on cpu"):
        kiln.rms_norm(x, _x(64))
    with pytest.raises(RuntimeError, match=r"add_rms_norm: argument 'residual'"):
        kiln.add_rms_norm(x, _x(4, 64))


# ---------------------------------------------------------------------------------------------
# receipts


RECEIPT_CALLS = {
    "rms_norm": lambda x, w: kiln.rms_norm(x, w),
    "add_rms_norm": lambda x, w: kiln.add_rms_norm(x, x, w),
    "layer_norm": lambda x, w: kiln.layer_norm(x, w, w),
    "add_layer_norm": lambda x, w: kiln.add_layer_norm(x, x, w, w),
    "rms_norm_backward": lambda x, w: ops.rms_norm_backward(x, x, w, 1e-6, x, True),
    "layer_norm_backward": lambda x, w: ops.layer_norm_backward(x, x, w, w, 1e-5, None, True, True),
}


@pytest.mark.parametrize("op", list(RECEIPT_CALLS))
@pytest.mark.parametrize("device", DEVICES)
def test_receipt_names_op_and_backend(device, op):
    x, w = _x(4, 64, device=device), _x(64, device=device)
    RECEIPT_CALLS[op](x, w)
    r = kiln.last_receipt()
    assert r.op == op
    assert r.backend == ("cuda" if device == "cuda" else "reference")
    assert r.variant
    assert str(r).startswith(f"{op} backend={r.backend} variant=")


def test_receipt_of_cpu_backward():
    """On the CPU, autograd runs the backward on this thread, so its receipt is visible here."""
    x = _x(4, 64).requires_grad_()
    kiln.rms_norm(x).sum().backward()
    assert kiln.last_receipt().op == "rms_norm_backward"
