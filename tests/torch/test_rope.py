"""kiln.rope / kiln.rope_ through PyTorch: against a plain float64 torch RoPE (both layouts,
partial rotation, GQA, strided views into a fused qkv buffer), bad positions left alone and
counted, in place on the fused buffer, autograd against torch's own, opcheck, torch.compile."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]


def cos_sin_cache(max_position, rotary_dim, base=10000.0):
    inv_freq = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    angles = torch.outer(torch.arange(max_position, dtype=torch.float64), inv_freq)
    return torch.cat([angles.cos(), angles.sin()], -1).float()


def torch_rope(x, cache, positions, layout, rotary_dim, sign=1.0):
    """x [T, H, D] rotated in float64; bad positions pass through."""
    x = x.double()
    r, half = rotary_dim, rotary_dim // 2
    ok = (positions >= 0) & (positions < cache.shape[0])
    row = cache.double()[positions.clamp(0, cache.shape[0] - 1)][:, None, :]
    cos, sin = row[..., :half], sign * row[..., half:]
    rot, tail = x[..., :r], x[..., r:]
    if layout == "neox":
        x1, x2 = rot[..., :half], rot[..., half:]
    else:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
    o1, o2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    out = torch.cat([o1, o2], -1) if layout == "neox" else torch.stack([o1, o2], -1).flatten(-2)
    return torch.where(ok[:, None, None], torch.cat([out, tail], -1), x), int((~ok).sum())


def fused_qkv(t, hq, hk, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(t, (hq + 2 * hk) * d, generator=g).to(device, dtype)
    q = qkv[:, : hq * d].view(t, hq, d)
    k = qkv[:, hq * d : (hq + hk) * d].view(t, hk, d)
    return qkv, q, k


TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("rotary_dim", [16, 8])
@pytest.mark.parametrize("layout", ["neox", "gptj"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch(device, dtype, layout, rotary_dim):
    t, hq, hk, d = 7, 4, 2, 16
    qkv, q, k = fused_qkv(t, hq, hk, d, dtype, device)
    before = qkv.clone()
    cache = cos_sin_cache(32, rotary_dim).to(device)
    positions = torch.tensor([0, 31, 5, 32, -3, 17, 17], device=device)
    q_out, k_out, bad = kiln.rope(q, k, cache, positions, layout, return_bad_count=True)
    want_q, bad_q = torch_rope(q, cache, positions, layout, rotary_dim)
    want_k, _ = torch_rope(k, cache, positions, layout, rotary_dim)
    assert bad.item() == bad_q == 2
    assert torch.equal(qkv, before), "out of place must not write its inputs"
    tol = TOL[dtype]
    torch.testing.assert_close(q_out.double(), want_q, rtol=tol, atol=tol)
    torch.testing.assert_close(k_out.double(), want_k, rtol=tol, atol=tol)
    assert kiln.last_receipt().op == "rope"


@pytest.mark.parametrize("device", DEVICES)
def test_uncounted_calls_still_leave_bad_positions_alone(device):
    # The default call keeps no count (no zero-fill kernel): bad positions are still never read.
    qkv, q, k = fused_qkv(6, 4, 2, 16, torch.bfloat16, device, seed=5)
    cache = cos_sin_cache(8, 16).to(device)
    positions = torch.tensor([1, 8, 7, -1, 0, 1 << 40], device=device)
    q_out, k_out = kiln.rope(q, k, cache, positions)
    want_q, bad_q = torch_rope(q, cache, positions, "neox", 16)
    want_k, _ = torch_rope(k, cache, positions, "neox", 16)
    assert bad_q == 3
    torch.testing.assert_close(q_out.double(), want_q, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(k_out.double(), want_k, rtol=2e-2, atol=2e-2)
    _, _, none = torch.ops.kiln.rope(q, k, cache, positions, "neox", 16, False)
    assert none.dtype == torch.int32 and none.numel() == 0
    before = qkv.clone()
    kiln.rope_(q, k, cache, positions)
    torch.testing.assert_close(q.double(), want_q, rtol=2e-2, atol=2e-2)
    for t in (1, 3, 5):
        assert torch.equal(qkv[t], before[t]), "a bad position's token is left alone"


@pytest.mark.parametrize("device", DEVICES)
def test_in_place_on_a_fused_qkv_buffer(device):
    t, hq, hk, d = 5, 8, 2, 32
    qkv, q, k = fused_qkv(t, hq, hk, d, torch.bfloat16, device, seed=1)
    before = qkv.clone()
    cache = cos_sin_cache(64, d).to(device)
    positions = torch.tensor([3, 63, 64, 0, 9], device=device)
    want_q, _ = torch_rope(q, cache, positions, "gptj", d)
    want_k, _ = torch_rope(k, cache, positions, "gptj", d)
    q2, k2, bad = kiln.rope_(q, k, cache, positions, "gptj", return_bad_count=True)
    assert q2 is q and k2 is k and bad.item() == 1
    torch.testing.assert_close(q.double(), want_q, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(k.double(), want_k, rtol=2e-2, atol=2e-2)
    assert torch.equal(qkv[:, (hq + hk) * d :], before[:, (hq + hk) * d :]), "v is untouched"
    assert torch.equal(qkv[2], before[2]), "the bad position's token is left alone"


@pytest.mark.parametrize("layout", ["neox", "gptj"])
@pytest.mark.parametrize("device", DEVICES)
def test_autograd_matches_torch(device, layout):
    t, hq, hk, d, r = 6, 3, 1, 12, 8
    g = torch.Generator().manual_seed(2)
    q = torch.randn(t, hq, d, generator=g).to(device)
    k = torch.randn(t, hk, d, generator=g).to(device)
    gq = torch.randn(t, hq, d, generator=g).to(device)
    gk = torch.randn(t, hk, d, generator=g).to(device)
    cache = cos_sin_cache(20, r).to(device)
    positions = torch.tensor([1, 19, 7, 20, 0, 4], device=device)
    qk = [q.clone().requires_grad_(), k.clone().requires_grad_()]
    q_out, k_out = kiln.rope(*qk, cache, positions, layout)
    ((q_out * gq).sum() + (k_out * gk).sum()).backward()
    if device == "cpu":  # autograd runs a CPU backward on this thread: its receipt is ours
        assert kiln.last_receipt().op == "rope_backward"
    ref = [q.double().requires_grad_(), k.double().requires_grad_()]
    outs = [torch_rope(x, cache, positions, layout, r)[0] for x in ref]
    ((outs[0] * gq.double()).sum() + (outs[1] * gk.double()).sum()).backward()
    for got, want in zip(qk, ref):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-5, atol=1e-5)
    # The gradient is the rotation by -theta of the incoming one.
    want_dq, _ = torch_rope(gq, cache, positions, layout, r, sign=-1.0)
    torch.testing.assert_close(qk[0].grad.double(), want_dq, rtol=1e-5, atol=1e-5)


def _opcheck_cases(device):
    _, q, k = fused_qkv(4, 2, 1, 8, torch.float32, device, seed=3)  # strided views
    cache = cos_sin_cache(6, 8).to(device)
    positions = torch.tensor([5, 0, 2, 6], device=device)
    ops = torch.ops.kiln
    return {
        "rope": (ops.rope, (q.detach().requires_grad_(), k, cache, positions, "neox", 8)),
        "rope_partial_gptj": (ops.rope, (q, k, cos_sin_cache(6, 4).to(device), positions,
                                         "gptj", 4)),
        "rope_inplace": (ops.rope_inplace, (q, k, cache, positions, "gptj", 8)),
        "rope_uncounted": (ops.rope, (q.detach().requires_grad_(), k, cache, positions, "neox", 8,
                                      False)),
        "rope_inplace_uncounted": (ops.rope_inplace, (q, k, cache, positions, "neox", 8, False)),
        "rope_backward": (ops.rope_backward, (q, k, cache, positions, "neox", 8)),
    }


@pytest.mark.parametrize("case", list(_opcheck_cases("cpu")))
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    cache = cos_sin_cache(16, 8).to(device)

    def attention_ingress(qkv, positions):
        q = qkv[:, :16].view(-1, 2, 8)
        k = qkv[:, 16:24].view(-1, 1, 8)
        q, k = kiln.rope(q * 2, k, cache, positions)
        return (q.sum(-1) + k.sum(-1)).relu()

    qkv = torch.randn(5, 32, device=device)
    positions = torch.tensor([0, 15, 3, 3, 8], device=device)
    eager, comp = qkv.clone().requires_grad_(), qkv.clone().requires_grad_()
    out = attention_ingress(eager, positions)
    out_c = torch.compile(attention_ingress, fullgraph=True, backend="aot_eager")(comp, positions)
    torch.testing.assert_close(out_c, out)
    out.sum().backward()
    out_c.sum().backward()
    torch.testing.assert_close(comp.grad, eager.grad)


def test_bad_input_is_reported():
    q, k = torch.zeros(2, 2, 8), torch.zeros(2, 1, 8)
    cache, positions = cos_sin_cache(4, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(RuntimeError, match="rope: argument 'layout': expected \"neox\" or"):
        kiln.rope(q, k, cache, positions, "llama")
    with pytest.raises(RuntimeError, match=r"rope: argument 'positions': expected dtype in \{i64"):
        kiln.rope(q, k, cache, positions.int())
    with pytest.raises(RuntimeError, match="rope: argument 'rotary_dim': expected an even value"):
        kiln.rope(q, k, cache, positions, rotary_dim=7)
    with pytest.raises(RuntimeError, match="rope: argument 'q': expected a dtype kiln knows"):
        kiln.rope(q.double(), k, cache, positions)
    with pytest.raises(RuntimeError, match="rope: argument 'k': expected shape \\[2, 1, 8\\]"):
        kiln.rope_(q, torch.zeros(3, 1, 8), cache, positions)
