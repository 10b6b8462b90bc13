"""Fake impls of the row gathers (torch/csrc/gather.cpp). No autograd: a gather of KV rows or of
MoE tokens here is inference-side data movement (the training path's permutation lives with the
MoE ops)."""

from __future__ import annotations

import torch
from torch.library import register_fake

from ._bad_count import fake_count


def _gathered(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return src.new_empty((index.shape[0], *src.shape[1:]))


@register_fake("kiln::gather_rows")
def _gather_rows_fake(src, index, count_bad=True):
    return _gathered(src, index), fake_count(src, count_bad)


@register_fake("kiln::gather_rows_pair")
def _gather_rows_pair_fake(k, v, index, count_bad=True):
    return _gathered(k, index), _gathered(v, index), fake_count(k, count_bad)
