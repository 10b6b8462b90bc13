"""kiln.kv_cache_write_ through PyTorch: slots against torch indexing, padding skipped, bad slots
counted and never written, e4m3 caches (torch's float8_e4m3fn) holding x / scale, opcheck."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]


@pytest.mark.parametrize("device", DEVICES)
def test_slots_padding_and_bad_slots(device):
    k = torch.randn(5, 2, 8, device=device).to(torch.bfloat16)
    v = torch.randn(5, 2, 8, device=device).to(torch.bfloat16)
    kc = torch.zeros(3, 4, 2, 8, device=device, dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    slots = torch.tensor([7, -1, 0, 12, 11], device=device)
    bad = kiln.kv_cache_write_(kc, vc, k, v, slots, return_bad_count=True)
    assert bad.item() == 1
    flat_k, flat_v = kc.view(12, 2, 8), vc.view(12, 2, 8)
    for t, s in enumerate(slots.tolist()):
        if 0 <= s < 12:
            assert torch.equal(flat_k[s], k[t]) and torch.equal(flat_v[s], v[t])
    assert int((flat_k != 0).any(-1).any(-1).sum()) == 3


@pytest.mark.parametrize("device", DEVICES)
def test_fp8_cache_holds_scaled_values(device):
    k = torch.randn(3, 2, 16, device=device).to(torch.float16) * 20
    kc = torch.zeros(2, 4, 2, 16, device=device, dtype=torch.float8_e4m3fn)
    vc = torch.zeros_like(kc)
    scale = torch.tensor([0.1, 0.5], device=device)
    kiln.kv_cache_write_(kc, vc, k, k, torch.tensor([0, 5, 2], device=device), scale)
    want = (k.float() / scale[None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn).float()
    got = kc.view(8, 2, 16)[torch.tensor([0, 5, 2])].float()
    torch.testing.assert_close(got, want, rtol=0.07, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    kb = torch.randn(3, 2, 8, device=device).to(torch.bfloat16)
    kcb = torch.zeros(2, 4, 2, 8, device=device, dtype=torch.bfloat16)
    torch.library.opcheck(
        torch.ops.kiln.kv_cache_write,
        (kcb, kcb.clone(), kb, kb, torch.tensor([1, 0, 6], device=device), None),
    )
    torch.library.opcheck(  # no count kept: int32 [0]
        torch.ops.kiln.kv_cache_write,
        (kcb, kcb.clone(), kb, kb, torch.tensor([1, 9, 6], device=device), None, False),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_uncounted_writes_still_skip_slots_past_the_cache(device):
    # The default call keeps no count (no zero-fill kernel): a slot past the cache is still never
    # written.
    k = torch.randn(3, 2, 8, device=device).to(torch.bfloat16)
    kc = torch.full((2, 4, 2, 8), 7.0, device=device, dtype=torch.bfloat16)
    vc = kc.clone()
    assert kiln.kv_cache_write_(kc, vc, k, k, torch.tensor([1, 8, 6], device=device)) is None
    want = torch.full_like(kc, 7.0).view(8, 2, 8)
    want[1], want[6] = k[0], k[2]
    assert torch.equal(kc.view(8, 2, 8), want) and torch.equal(vc.view(8, 2, 8), want)


def test_bad_input_is_reported():
    k = torch.zeros(2, 2, 8, dtype=torch.bfloat16)
    kc = torch.zeros(2, 4, 3, 8, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="kv_cache_write: argument 'key_cache'"):
        kiln.kv_cache_write_(kc, kc.clone(), k, k, torch.tensor([0, 1]))
