"""kiln.topk through PyTorch: exact agreement with a stable sort by (value desc, index asc) in
float64 (ties to the lower index, NaN first), the softmax of the picks, opcheck,
torch.compile(fullgraph=True), errors; on the GPU the same checks against the CPU result."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]


def make_scores(rows, experts, seed, dtype, ties):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(rows, experts, generator=g, dtype=torch.float64)
    if ties:
        s = torch.randint(0, 4, (rows, experts), generator=g).double() * 0.5
        s[::3, 1 % experts] = float("nan")
    return s.to(dtype)


def reference(scores, k):
    """Stable sort by (NaN first, value descending), so equal values keep index order."""
    s = scores.double()
    key = torch.where(s.isnan(), torch.full_like(s, float("inf")), s)
    rank_nan = s.isnan().double()
    # Sort by (-nan flag, -value) stably: two stable passes, the minor key first.
    order = torch.sort(-key, dim=1, stable=True).indices
    order = torch.gather(order, 1, torch.sort(-torch.gather(rank_nan, 1, order), dim=1,
                                              stable=True).indices)
    idx = order[:, :k]
    return torch.gather(s, 1, idx), idx.int()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("experts,k", [(1, 1), (7, 3), (64, 8), (256, 8), (1024, 32)])
@pytest.mark.parametrize("ties", [False, True])
def test_exact(device, dtype, experts, k, ties):
    scores = make_scores(9, experts, experts * 31 + k, dtype, ties).to(device)
    values, indices = kiln.topk(scores, k)
    want_v, want_i = reference(scores.cpu(), k)
    assert torch.equal(indices.cpu(), want_i)
    torch.testing.assert_close(values.cpu().double(), want_v, equal_nan=True, atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_softmax_of_picks(device):
    scores = make_scores(5, 64, 3, torch.float32, False).to(device)
    values, indices = kiln.topk(scores, 8, softmax=True)
    want_v, want_i = reference(scores.cpu(), 8)
    assert torch.equal(indices.cpu(), want_i)
    torch.testing.assert_close(values.cpu().double(), torch.softmax(want_v, dim=1), atol=1e-6,
                               rtol=1e-5)


def test_opcheck():
    # Ties but no NaN: opcheck compares outputs with ==, and NaN never equals itself.
    scores = torch.randint(0, 4, (4, 16), generator=torch.Generator().manual_seed(1)).float()
    torch.library.opcheck(torch.ops.kiln.topk, (scores, 4, False, True))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    scores = make_scores(6, 32, 2, torch.float32, False)
    fn = torch.compile(lambda s: kiln.topk(s * 2, 4, softmax=True), fullgraph=True,
                       backend="aot_eager")
    got_v, got_i = fn(scores)
    want_v, want_i = kiln.topk(scores * 2, 4, softmax=True)
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_v, want_v)


def test_errors():
    with pytest.raises(RuntimeError, match=r"topk: argument 'k': expected 1 <= k <= min\(E, 32\) "
                                           r"= 4, got 5"):
        kiln.topk(torch.zeros(2, 4), 5)
    with pytest.raises(RuntimeError, match="argument 'scores': expected E"):
        kiln.topk(torch.zeros(2, 1025), 2)
