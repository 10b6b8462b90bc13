"""kiln.router / kiln.hash_router through PyTorch: each router kind against plain float64 torch
math (selection with bias, DeepSeek-V3 groups), opcheck, torch.compile(fullgraph=True), errors;
on a GPU the same against the CPU result."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]


def spaced_logits(rows, experts, seed):
    """A random permutation of levels 1/128 apart per row: no near ties anywhere."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(experts, generator=g).double() / 128 - 4
                        for _ in range(rows)]).float()


def torch_router(logits, k, kind, renormalize=False, bias=None, n_group=1, topk_group=1,
                 scale=1.0):
    x = logits.double()
    if kind == "softmax":
        score = torch.softmax(x, dim=1)
        sel = score
    elif kind == "deepseek_v3":
        score = torch.sigmoid(x)
        sel = score + bias.double()
    else:
        score = torch.sqrt(torch.nn.functional.softplus(x))
        sel = score + (bias.double() if bias is not None else 0)
    if kind == "deepseek_v3":
        t, e = sel.shape
        groups = sel.view(t, n_group, e // n_group)
        group_score = groups.topk(min(2, e // n_group), dim=2).values.sum(2)
        keep = group_score.topk(topk_group, dim=1).indices
        mask = torch.zeros(t, n_group, dtype=torch.bool).scatter_(1, keep, True)
        sel = sel.masked_fill(~mask.repeat_interleave(e // n_group, dim=1), -float("inf"))
    ids = sel.topk(k, dim=1).indices
    w = score.gather(1, ids)
    if kind != "softmax" or renormalize:
        w = w / w.sum(1, keepdim=True)
    if kind == "deepseek_v3":
        w = w * scale
    return w.float(), ids.int()


CASES = [
    pytest.param("softmax", {}, id="softmax"),
    pytest.param("softmax", {"renormalize": True}, id="softmax-renorm"),
    pytest.param("activation", {"bias": True}, id="activation-bias"),
    pytest.param("deepseek_v3", {"bias": True, "n_group": 8, "topk_group": 4,
                                 "routed_scaling_factor": 2.5}, id="deepseek"),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,opts", CASES)
def test_matches_torch_math(device, kind, opts):
    logits = spaced_logits(7, 256, 1)
    bias = (torch.randint(0, 3, (256,), generator=torch.Generator().manual_seed(2)) * 2.0
            if opts.get("bias") else None)
    kw = {k: v for k, v in opts.items() if k != "bias"}
    w, ids = kiln.router(logits.to(device), 8, kind=kind,
                         bias=None if bias is None else bias.to(device), **kw)
    want_w, want_ids = torch_router(logits, 8, kind, kw.get("renormalize", False), bias,
                                    kw.get("n_group", 1), kw.get("topk_group", 1),
                                    kw.get("routed_scaling_factor", 1.0))
    assert torch.equal(ids.cpu(), want_ids)
    torch.testing.assert_close(w.cpu(), want_w, atol=1e-6, rtol=1e-5)


def test_hash_router():
    table = torch.tensor([[3, 1], [0, 2], [2, 2]], dtype=torch.int32)
    w, ids, bad = kiln.hash_router(torch.tensor([2, 5, 0]), table, return_bad_count=True)
    assert ids.tolist() == [[2, 2], [-1, -1], [3, 1]]
    assert w.tolist() == [[0.5, 0.5], [0.0, 0.0], [0.5, 0.5]]
    assert bad.item() == 1
    # Uncounted by default: the same outputs, no count.
    w2, ids2 = kiln.hash_router(torch.tensor([2, 5, 0]), table)
    assert torch.equal(w2, w) and torch.equal(ids2, ids)
    assert torch.ops.kiln.hash_router(torch.tensor([5]), table, False)[2].numel() == 0


@requires_cuda
def test_hash_router_cuda_matches_cpu():
    g = torch.Generator().manual_seed(5)
    table = torch.randint(0, 256, (1000, 8), generator=g, dtype=torch.int32)
    tokens = torch.randint(-3, 1003, (777,), generator=g)
    want = kiln.hash_router(tokens, table, return_bad_count=True)
    strided = table.t().contiguous().t().cuda()
    got = kiln.hash_router(tokens.cuda(), strided, return_bad_count=True)
    assert kiln.last_receipt().backend == "cuda"
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)
    assert int(want[2]) > 0
    for a, b in zip(kiln.hash_router(tokens.cuda(), strided), want[:2]):  # uncounted
        assert torch.equal(a.cpu(), b)


def test_hash_router_check_indices_raises(monkeypatch):
    from kiln.functional import _bad_count
    monkeypatch.setattr(_bad_count, "CHECK", True)  # KILN_CHECK_INDICES=1, read at import
    table = torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)
    assert kiln.hash_router(torch.tensor([0, 1]), table)[1].tolist() == [[1, 2], [3, 4]]
    with pytest.raises(IndexError, match="hash_router: 1 token id"):
        kiln.hash_router(torch.tensor([0, 7]), table)


def test_hash_router_opcheck():
    table = torch.randint(0, 64, (50, 4), dtype=torch.int32)
    for count_bad in (True, False):
        torch.library.opcheck(torch.ops.kiln.hash_router,
                              (torch.tensor([3, 60, -1, 49]), table, count_bad))


def test_opcheck():
    torch.library.opcheck(torch.ops.kiln.router, (spaced_logits(4, 64, 3), "deepseek_v3", 4, False,
                                                  torch.zeros(64), 4, 2, 1.5))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    logits = spaced_logits(5, 64, 4)
    fn = torch.compile(lambda x: kiln.router(x, 4, kind="activation"), fullgraph=True,
                       backend="aot_eager")
    got_w, got_ids = fn(logits)
    want_w, want_ids = kiln.router(logits, 4, kind="activation")
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_w, want_w)


def test_errors():
    with pytest.raises(RuntimeError, match="argument 'kind': expected one of softmax, deepseek_v3, "
                                           "activation, got sparsemax"):
        kiln.router(torch.zeros(2, 8), 2, kind="sparsemax")
    with pytest.raises(RuntimeError, match="argument 'bias': expected f32 \\[E\\] for the "
                                           "deepseek_v3 router"):
        kiln.router(torch.zeros(2, 8), 2, kind="deepseek_v3", n_group=2, topk_group=1)


@pytest.mark.parametrize("kind,kw", [("softmax", {"renormalize": True}),
                                     ("deepseek_v3", {"bias": torch.zeros(16), "n_group": 4,
                                                      "topk_group": 2,
                                                      "routed_scaling_factor": 2.5})])
def test_dense_router_is_the_gate_product_then_the_router(kind, kw):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 40, generator=g)
    gate = torch.randn(16, 40, generator=g)
    w, ids, logits = kiln.dense_router(x, gate, 3, kind=kind, **kw)
    assert kiln.last_receipt().op == "dense_router"
    torch.testing.assert_close(logits, (x.double() @ gate.double().t()).float())
    want_w, want_ids = kiln.router(logits, 3, kind=kind, **kw)
    assert torch.equal(ids, want_ids) and torch.equal(w, want_w)


def test_dense_router_gradients_and_opcheck():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(5, 24, generator=g, dtype=torch.float64).float().requires_grad_()
    gate = torch.randn(8, 24, generator=g).requires_grad_()
    w, ids, logits = kiln.dense_router(x, gate, 2, kind="activation")
    gw, gl = torch.randn_like(w), torch.randn_like(logits)
    (w * gw).sum().add((logits * gl).sum()).backward()
    xr, gr = x.detach().double().requires_grad_(), gate.detach().double().requires_grad_()
    lr = xr @ gr.t()
    s = torch.sqrt(torch.nn.functional.softplus(lr)).gather(1, ids.long())
    wr = s / s.sum(1, keepdim=True)
    (wr * gw.double()).sum().add((lr * gl.double()).sum()).backward()
    torch.testing.assert_close(x.grad.double(), xr.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gate.grad.double(), gr.grad, atol=1e-5, rtol=1e-5)
    torch.library.opcheck(torch.ops.kiln.dense_router,
                          (x, gate, "softmax", 2, True, None, 1, 1, 1.0))


@requires_cuda
@pytest.mark.parametrize("t", [1, 16, 17, 200])
def test_dense_router_cuda_matches_cpu(t):
    g = torch.Generator().manual_seed(11)
    levels = torch.stack([torch.randperm(64, generator=g) for _ in range(t)]).float() / 64 - 0.5
    x = torch.cat([levels, torch.randn(t, 192, generator=g)], 1).bfloat16()
    gate = torch.cat([torch.eye(64), torch.zeros(64, 192)], 1).bfloat16()  # exact, distinct logits
    want = kiln.dense_router(x, gate, 8, kind="softmax", renormalize=True)
    got = kiln.dense_router(x.cuda(), gate.cuda(), 8, kind="softmax", renormalize=True)
    path = "fused_gemv" if t <= 16 else "cublas_gemm_f32"
    assert kiln.last_receipt().variant.startswith(f"dense_router<{path}")
    assert torch.equal(got[1].cpu(), want[1]) and torch.equal(got[2].cpu(), want[2])
    torch.testing.assert_close(got[0].cpu(), want[0], atol=1e-6, rtol=1e-5)
