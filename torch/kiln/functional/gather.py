"""Row gathers (contract: include/kiln/ops/gather.h)."""

from __future__ import annotations

import torch

from . import _bad_count

_ops = torch.ops.kiln


def _checked(op: str, bad: torch.Tensor) -> None:
    _bad_count.check(bad, op + ": {} index(es) out of range (their rows are zeros)")


def gather_rows(
    src: torch.Tensor, index: torch.Tensor, return_bad_count: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """out = src[index] along dim 0, for src [N, ...] of any dtype (trailing dims contiguous) and
    index int32/int64 [M]. An index outside [0, N) is never read: its row is zeros and it is
    counted when asked: return_bad_count=True returns the count (int32 [1], on src's device);
    without it (and without KILN_CHECK_INDICES=1) nothing is counted, so no zero-fill kernel runs
    for the count."""
    out, bad = _ops.gather_rows(src, index, _bad_count.wanted(return_bad_count))
    _checked("gather_rows", bad)
    return (out, bad) if return_bad_count else out


def gather_rows_pair(
    k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, return_bad_count: bool = False
):
    """(k[index], v[index]) in one launch; out-of-range indices as in gather_rows, counted once."""
    ok, ov, bad = _ops.gather_rows_pair(k, v, index, _bad_count.wanted(return_bad_count))
    _checked("gather_rows_pair", bad)
    return (ok, ov, bad) if return_bad_count else (ok, ov)
