"""Helpers shared by the autograd formulas of every family."""

from __future__ import annotations

import torch


def rows(t: torch.Tensor) -> torch.Tensor:
    """An incoming gradient as kiln takes it: contiguous. Autograd may hand over expanded or
    strided ones (the stride-0 ones of ``y.sum()``), and torch calls an empty tensor contiguous
    whatever its strides, which kiln does not, so an empty one is made afresh."""
    return t.new_empty(t.shape) if t.numel() == 0 else t.contiguous()
