"""kiln.attention_varlen / kiln.attention through PyTorch on the CPU (the float64 reference behind
the full contract): values and gradients against plain torch math in float64 with the same masks,
the padded form, opcheck, torch.compile(fullgraph=True), and errors; on a GPU the CUDA kernels
(forward and backward) against the same math."""

from __future__ import annotations

import math

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()


def make(shape, seed, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def torch_attention(q, k, v, cu_q, cu_k, causal, window, softcap, scale, docs=None):
    """The same math per sequence in float64: scores, the mask (bottom-right causal, window,
    documents), softmax over visible keys (rows seeing nothing give 0), times v (GQA by repeat)."""
    hq, hkv = q.shape[1], k.shape[1]
    outs = []
    for b in range(len(cu_q) - 1):
        qs, ks = q[cu_q[b]:cu_q[b + 1]], k[cu_k[b]:cu_k[b + 1]]
        vs = v[cu_k[b]:cu_k[b + 1]]
        lq, lk = qs.shape[0], ks.shape[0]
        ks = ks.repeat_interleave(hq // hkv, dim=1)
        vs = vs.repeat_interleave(hq // hkv, dim=1)
        s = torch.einsum("qhd,khd->hqk", qs, ks) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        i = torch.arange(lq)[:, None] + (lk - lq)
        j = torch.arange(lk)[None, :]
        ok = torch.ones(lq, lk, dtype=torch.bool)
        if causal:
            ok &= j <= i
        if window[0] >= 0:
            ok &= j >= i - window[0]
        if window[1] >= 0:
            ok &= j <= i + window[1]
        if docs is not None:
            dq, dk = docs[0][cu_q[b]:cu_q[b + 1]], docs[1][cu_k[b]:cu_k[b + 1]]
            ok &= dq[:, None] == dk[None, :]
        s = s.masked_fill(~ok, -math.inf)
        p = torch.softmax(s, dim=-1).nan_to_num(0.0)
        outs.append(torch.einsum("hqk,khd->qhd", p, vs))
    return torch.cat(outs)


CASES = [
    pytest.param(False, (-1, -1), 0.0, False, id="full"),
    pytest.param(True, (-1, -1), 0.0, False, id="causal"),
    pytest.param(True, (3, -1), 0.0, True, id="causal-window-docs"),
    pytest.param(False, (2, 1), 5.0, False, id="window-softcap"),
]


@pytest.mark.parametrize("causal,window,softcap,docs", CASES)
def test_matches_torch_math(causal, window, softcap, docs):
    cu_q = torch.tensor([0, 3, 3, 8], dtype=torch.int32)  # an empty sequence in the middle
    cu_k = torch.tensor([0, 5, 6, 12], dtype=torch.int32)
    q = make((8, 4, 64), 1).requires_grad_()
    k = make((12, 2, 64), 2).requires_grad_()
    v = make((12, 2, 64), 3).requires_grad_()
    doc_ids = None
    if docs:
        doc_ids = (torch.tensor([0, 0, 1, 0, 0, 1, 1, 1], dtype=torch.int32),
                   torch.tensor([0, 0, 0, 1, 1, 9, 0, 0, 1, 1, 1, 1], dtype=torch.int32))
    out = kiln.attention_varlen(q, k, v, cu_q, cu_k, causal=causal, window=window,
                                softcap=softcap, doc_ids=doc_ids)
    assert kiln.last_receipt().backend == "reference"
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    want = torch_attention(q64, k64, v64, cu_q.tolist(), cu_k.tolist(), causal, window, softcap,
                           1 / 8, doc_ids)
    torch.testing.assert_close(out.double(), want, atol=1e-2, rtol=1e-2)
    g = make(out.shape, 4)
    out.backward(g)
    want.backward(g.double())
    for got, ref in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        torch.testing.assert_close(got.double(), ref, atol=2e-2, rtol=2e-2)
    assert k.grad.abs().sum() > 0


def test_padded_form_and_lse():
    q, k, v = make((2, 4, 4, 64), 5), make((2, 6, 1, 64), 6), make((2, 6, 1, 64), 7)
    out, lse = kiln.attention(q, k, v, causal=True, return_lse=True)
    assert out.shape == (2, 4, 4, 64) and lse.shape == (4, 8) and lse.dtype == torch.float32
    flat = kiln.attention_varlen(q.reshape(8, 4, 64), k.reshape(12, 1, 64), v.reshape(12, 1, 64),
                                 torch.tensor([0, 4, 8], dtype=torch.int32),
                                 torch.tensor([0, 6, 12], dtype=torch.int32), causal=True)
    assert torch.equal(out.reshape(8, 4, 64), flat)


def test_opcheck():
    args = (make((5, 2, 64), 8), make((7, 1, 64), 9), make((7, 1, 64), 10),
            torch.tensor([0, 2, 5], dtype=torch.int32), torch.tensor([0, 3, 7], dtype=torch.int32),
            None, None, None, None, True, -1, -1, 0.125, 0.0)
    torch.library.opcheck(torch.ops.kiln.attention_varlen, args)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    cu = torch.tensor([0, 3, 6], dtype=torch.int32)

    def block(q, k, v):
        return kiln.attention_varlen(q * 2, k, v, cu, cu, causal=True).float().sum()

    args = [make((6, 2, 64), 11), make((6, 2, 64), 12), make((6, 2, 64), 13)]
    eager = [a.clone().requires_grad_() for a in args]
    comp = [a.clone().requires_grad_() for a in args]
    out = block(*eager)
    out_c = torch.compile(block, fullgraph=True, backend="aot_eager")(*comp)
    torch.testing.assert_close(out_c, out)
    out.backward()
    out_c.backward()
    for a, b in zip(comp, eager):
        torch.testing.assert_close(a.grad, b.grad)


def test_errors_name_the_argument():
    cu = torch.tensor([0, 3], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="argument 'q': expected a head count that is a "
                                           "multiple of k's \\(2\\), got 3 heads"):
        kiln.attention_varlen(make((3, 3, 64), 1), make((3, 2, 64), 2), make((3, 2, 64), 3), cu,
                              cu)
    with pytest.raises(RuntimeError, match="argument 'cu_seqlens_q': expected to end at "
                                           "total_q = 4, got 3"):
        kiln.attention_varlen(make((4, 2, 64), 1), make((3, 2, 64), 2), make((3, 2, 64), 3), cu,
                              cu)
    with pytest.raises(RuntimeError, match="head dims"):
        kiln.attention_varlen(make((3, 2, 32), 1), make((3, 2, 32), 2), make((3, 2, 32), 3), cu,
                              cu)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("causal,window,softcap,docs", CASES)
def test_cuda_matches_torch_math_with_gradients(causal, window, softcap, docs):
    cu_q = torch.tensor([0, 3, 3, 80], dtype=torch.int32)  # an empty sequence in the middle
    cu_k = torch.tensor([0, 5, 6, 90], dtype=torch.int32)
    q, k, v = make((80, 4, 64), 1), make((90, 2, 64), 2), make((90, 2, 64), 3)
    doc_ids = None
    if docs:  # non-decreasing along each sequence
        doc_ids = (torch.tensor([0, 0, 1] + [i // 20 for i in range(77)], dtype=torch.int32),
                   torch.tensor([0, 0, 0, 1, 1, 9] + [i // 21 for i in range(84)],
                                dtype=torch.int32))
    qc, kc, vc = (t.cuda().requires_grad_() for t in (q, k, v))
    out, lse = kiln.attention_varlen(
        qc, kc, vc, cu_q.cuda(), cu_k.cuda(), causal=causal, window=window, softcap=softcap,
        return_lse=True, doc_ids=None if doc_ids is None else tuple(d.cuda() for d in doc_ids))
    assert kiln.last_receipt().backend == "cuda"
    assert lse.shape == (4, 80) and lse.device.type == "cuda"
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    want = torch_attention(q64, k64, v64, cu_q.tolist(), cu_k.tolist(), causal, window, softcap,
                           1 / 8, doc_ids)
    torch.testing.assert_close(out.cpu().double(), want, atol=1e-2, rtol=1e-2)
    g = make(out.shape, 4)
    out.backward(g.cuda())
    assert kiln.last_receipt().backend == "cuda"
    want.backward(g.double())
    for got, ref in ((qc.grad, q64.grad), (kc.grad, k64.grad), (vc.grad, v64.grad)):
        torch.testing.assert_close(got.cpu().double(), ref, atol=3e-2, rtol=3e-2)


def _paged_problem(device):
    """q, contiguous k/v, the same keys in a shuffled 16-slot page cache, and the metadata."""
    page = 16
    cu_q = torch.tensor([0, 4, 9], dtype=torch.int32)
    cu_k = torch.tensor([0, 20, 25], dtype=torch.int32)
    q, k, v = make((9, 4, 64), 1), make((25, 2, 64), 2), make((25, 2, 64), 3)
    kc, vc = make((4, page, 2, 64), 7), make((4, page, 2, 64), 8)
    table = torch.tensor([[3, 1], [0, 2]], dtype=torch.int32)  # page 2: never referenced
    for b in range(2):
        start, n = int(cu_k[b]), int(cu_k[b + 1] - cu_k[b])
        for j in range(n):
            kc[table[b, j // page], j % page] = k[start + j]
            vc[table[b, j // page], j % page] = v[start + j]
    return [t.to(device) for t in (q, k, v, kc, vc, table, cu_q, cu_k)]


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if HAS_CUDA else []))
def test_paged_equals_contiguous(device):
    q, k, v, kc, vc, table, cu_q, cu_k = _paged_problem(device)
    out, lse = kiln.attention_varlen(q, k, v, cu_q, cu_k, causal=True, return_lse=True)
    paged, paged_lse = kiln.attention_varlen_paged(q, kc, vc, table, cu_q, cu_k, causal=True,
                                                   return_lse=True)
    assert kiln.last_receipt().backend == ("cuda" if device == "cuda" else "reference")
    assert torch.equal(out, paged) and torch.equal(lse, paged_lse)


def test_paged_opcheck_and_errors():
    q, k, v, kc, vc, table, cu_q, cu_k = _paged_problem("cpu")
    torch.library.opcheck(torch.ops.kiln.attention_varlen_paged,
                          (q, kc, vc, table, cu_q, cu_k, None, None, True, -1, -1, 0.125, 0.0))
    with pytest.raises(RuntimeError, match=r"block_table\[1\]\[0\] = 9"):
        kiln.attention_varlen_paged(q, kc, vc, torch.tensor([[3, 1], [9, 2]], dtype=torch.int32),
                                    cu_q, cu_k)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_bad_metadata_is_counted_not_read():
    """Device metadata is not checked on the host: a sequence whose cu_seqlens run past the tensors
    and a page id past the cache are counted (and skipped); good metadata counts 0."""
    q, k, v = (make(s, i).cuda() for i, s in enumerate(((8, 2, 64), (8, 2, 64), (8, 2, 64))))
    good = torch.tensor([0, 3, 8], dtype=torch.int32, device="cuda")
    out, bad = kiln.attention_varlen(q, k, v, good, good, causal=True, return_bad_count=True)
    assert bad.dtype == torch.int32 and bad.device.type == "cuda" and int(bad) == 0
    past = torch.tensor([0, 3, 99], dtype=torch.int32, device="cuda")  # sequence 1 ends past 8
    out, lse, bad = kiln.attention_varlen(q, k, v, past, past, causal=True, return_lse=True,
                                          return_bad_count=True)
    assert int(bad) >= 1  # the sequence, and the offsets' ends not matching the tensors
    want = kiln.attention_varlen(q[:3], k[:3], v[:3], good[:2], good[:2], causal=True)
    torch.testing.assert_close(out[:3], want, atol=0, rtol=0)  # the good sequence is untouched
    pq, _, _, kc, vc, table, cu_q, cu_k = _paged_problem("cuda")
    bad_table = torch.tensor([[3, 1], [9, 2]], dtype=torch.int32, device="cuda")
    _, bad = kiln.attention_varlen_paged(pq, kc, vc, bad_table, cu_q, cu_k, causal=True,
                                         return_bad_count=True)
    assert int(bad) >= 1


def test_cpu_bad_count_is_zero_and_bad_metadata_raises():
    q, k, v = make((8, 2, 64), 1), make((8, 2, 64), 2), make((8, 2, 64), 3)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    _, bad = kiln.attention_varlen(q, k, v, cu, cu, return_bad_count=True)
    assert int(bad) == 0
    with pytest.raises(RuntimeError, match="cu_seqlens"):
        kiln.attention_varlen(q, k, v, torch.tensor([0, 3, 99], dtype=torch.int32),
                              torch.tensor([0, 3, 99], dtype=torch.int32))
