"""Fake impls of the row gathers (torch/csrc/gather.cpp). No autograd: a gather of KV rows or of
MoE tokens here is inference-side data movement (the training path's permutation lives with the
MoE ops)."""

from __future__ import annotations

import torch
from torch.library import register_fake


def _gathered(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return src.new_empty((index.shape[0], *src.shape[1:]))


def _count(like: torch.Tensor, count_bad: bool) -> torch.Tensor:
    return like.new_empty((1 if count_bad else 0,), dtype=torch.int32)


@register_fake("kiln::gather_rows")
def _gather_rows_fake(src, index, count_bad=True):
    return _gathered(src, index), _count(src, count_bad)


@register_fake("kiln::gather_rows_pair")
def _gather_rows_pair_fake(k, v, index, count_bad=True):
    return _gathered(k, index), _gathered(v, index), _count(k, count_bad)
