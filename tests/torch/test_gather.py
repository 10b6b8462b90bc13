"""kiln.gather_rows / gather_rows_pair through PyTorch: against torch indexing, out-of-range
indices (zero rows, counted, never read), opcheck, torch.compile(fullgraph=True)."""

from __future__ import annotations

import pytest
import torch

import kiln

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_torch_indexing(device, index_dtype):
    src = torch.randn(10, 4, 8, device=device).to(torch.bfloat16)
    index = torch.tensor([9, 0, 3, 3, 7], device=device, dtype=index_dtype)
    out, bad = kiln.gather_rows(src, index, return_bad_count=True)
    assert torch.equal(out, src[index.long()])
    assert bad.item() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_out_of_range_rows_are_zero_and_counted(device):
    k = torch.randn(5, 2, 4, device=device)
    v = torch.randn(5, 3, device=device).to(torch.float16)
    index = torch.tensor([4, -1, 5, 1, 100], device=device)
    ok, ov, bad = kiln.gather_rows_pair(k, v, index, return_bad_count=True)
    assert bad.item() == 3
    for m, i in enumerate(index.tolist()):
        if 0 <= i < 5:
            assert torch.equal(ok[m], k[i]) and torch.equal(ov[m], v[i])
        else:
            assert not ok[m].any() and not ov[m].any()


@pytest.mark.parametrize("device", DEVICES)
def test_uncounted_gathers_still_give_zero_rows(device):
    # The default call keeps no count (no zero-fill kernel): bad indices are still never read.
    k = torch.randn(5, 2, 4, device=device)
    v = torch.randn(5, 3, device=device)
    index = torch.tensor([4, -1, 5, 1, 100], device=device)
    ok, ov = kiln.gather_rows_pair(k, v, index)
    out = kiln.gather_rows(k, index)
    for m, i in enumerate(index.tolist()):
        good = 0 <= i < 5
        assert torch.equal(ok[m], k[i] if good else torch.zeros_like(k[0]))
        assert torch.equal(ov[m], v[i] if good else torch.zeros_like(v[0]))
        assert torch.equal(out[m], ok[m])
    _, none = torch.ops.kiln.gather_rows(k, index, False)
    assert none.dtype == torch.int32 and none.numel() == 0


def _opcheck_cases(device):
    src = torch.randn(6, 3, 4, device=device)
    index = torch.tensor([5, 0, 2], device=device)
    ops = torch.ops.kiln
    return {
        "gather_rows": (ops.gather_rows, (src, index)),
        "gather_rows_pair": (ops.gather_rows_pair, (src, src[:, 0], index.int())),
        "gather_rows_uncounted": (ops.gather_rows, (src, index, False)),
        "gather_rows_pair_uncounted": (ops.gather_rows_pair, (src, src[:, 0], index, False)),
    }


@pytest.mark.parametrize("case", list(_opcheck_cases("cpu")))
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, case):
    op, args = _opcheck_cases(device)[case]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def compact(kv, keep):
        return kiln.gather_rows(kv * 2, keep) + 1

    kv = torch.randn(8, 16, device=device)
    keep = torch.tensor([1, 3, 5], device=device)
    torch.testing.assert_close(
        torch.compile(compact, fullgraph=True, backend="aot_eager")(kv, keep), compact(kv, keep)
    )


def test_bad_input_is_reported():
    with pytest.raises(RuntimeError, match="gather_rows: argument 'index'"):
        kiln.gather_rows(torch.zeros(4, 2), torch.zeros(2))
