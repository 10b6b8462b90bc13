"""kiln.tau_tail_ through PyTorch: in place against torch's own math in float64, k untouched, bad
positions left alone and counted, opcheck (with the in-place mutation), errors."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]


def torch_tau_tail(qkv, tok, table, positions, heads):
    t, width = qkv.shape
    d = width // (3 * heads)
    q, k, v = qkv.double().view(t, 3, heads, d).unbind(1)
    ok = (positions >= 0) & (positions < table.shape[0])
    tau = table.double()[positions.clamp(0, table.shape[0] - 1)]
    sq = torch.where(ok[:, None], torch.tanh(tok.double()[:, :heads]) + tau, 1.0)
    sv = torch.where(ok[:, None], torch.tanh(tok.double()[:, heads:]) + tau, 1.0)
    return torch.stack([q * sq[..., None], k, v * sv[..., None]], 1).view(t, width), int((~ok).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch(device, dtype):
    g = torch.Generator().manual_seed(0)
    heads, d, t = 4, 16, 9
    qkv = torch.randn(t, 3 * heads * d, generator=g).to(device, dtype)
    tok = torch.randn(t, 2 * heads, generator=g).to(device, dtype)
    table = torch.randn(12, heads, generator=g).to(device, torch.float32)
    positions = torch.tensor([0, 3, 11, 12, -1, 5, 5, 2, 7], device=device)
    want, bad_want = torch_tau_tail(qkv, tok, table, positions, heads)
    out, bad = kiln.tau_tail_(qkv, tok, table, positions, heads, return_bad_count=True)
    assert out is qkv
    assert bad.item() == bad_want == 2
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(qkv.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    qkv = torch.randn(5, 3 * 2 * 8, device=device)
    tok = torch.randn(5, 4, device=device)
    table = torch.randn(6, 2, device=device)
    positions = torch.tensor([0, 5, 2, 1, 3], device=device)
    torch.library.opcheck(torch.ops.kiln.tau_tail, (qkv, tok, table, positions, 2))
    torch.library.opcheck(torch.ops.kiln.tau_tail, (qkv, tok, table, positions, 2, False))


@pytest.mark.parametrize("device", DEVICES)
def test_uncounted_calls_still_leave_bad_positions_alone(device):
    # The default call keeps no count (no zero-fill kernel): a bad position is still never read.
    qkv = torch.randn(3, 3 * 2 * 8, device=device)
    before = qkv.clone()
    tok, table = torch.randn(3, 4, device=device), torch.randn(6, 2, device=device)
    kiln.tau_tail_(qkv, tok, table, torch.tensor([0, 6, -1], device=device), 2)
    assert torch.equal(qkv[1:], before[1:])
    assert not torch.equal(qkv[0], before[0])


def test_bad_input_is_reported():
    with pytest.raises(RuntimeError, match="tau_tail: argument 'heads'"):
        kiln.tau_tail_(torch.zeros(2, 24), torch.zeros(2, 10), torch.zeros(4, 5),
                       torch.zeros(2, dtype=torch.long), 5)
