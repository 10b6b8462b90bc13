"""Attention ingress scaling (Kestrel's tau tail; contract: include/kiln/ops/tau_tail.h)."""

from __future__ import annotations

import torch

from . import _bad_count

_ops = torch.ops.kiln


def tau_tail_(
    qkv: torch.Tensor,
    tok_qv_lin: torch.Tensor,
    tau_pos_table: torch.Tensor,
    positions: torch.Tensor,
    heads: int,
    return_bad_count: bool = False,
):
    """In place on qkv [T, 3 H D] (q | k | v): q_h and v_h scaled by tanh(tok_q_h / tok_v_h) +
    tau_pos_table[positions, h]; k untouched. tok_qv_lin [T, 2 H] and tau_pos_table [P, H] of
    qkv's dtype or float32; positions int32/int64 [T]. A position outside [0, P) is never read and
    leaves its token as it was; it is counted when asked (return_bad_count=True returns the int32
    [1] count; with KILN_CHECK_INDICES=1 the call syncs and raises), otherwise no count is kept (no
    zero-fill kernel runs for it). Returns qkv (and the count)."""
    count = _bad_count.wanted(return_bad_count)
    bad = _ops.tau_tail(qkv, tok_qv_lin, tau_pos_table, positions, heads, count)
    _bad_count.check(bad, "tau_tail: {} position(s) out of range")
    return (qkv, bad) if return_bad_count else qkv
