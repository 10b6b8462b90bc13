"""Top-k of each row, the router's first step (contract: include/kiln/ops/topk.h)."""

from __future__ import annotations

import torch

_ops = torch.ops.kiln


def topk(scores: torch.Tensor, k: int, *, softmax: bool = False, f32_values: bool = True):
    """(values [T, k], indices int32 [T, k]) of scores [T, E] (E <= 1024, k <= min(E, 32)).

    Sorted descending; ties go to the lower index and NaN ranks first, so the result is exactly
    the reference's. softmax: values are the softmax of the k picked scores. Values are float32
    unless f32_values=False (then scores' dtype). No gradient.
    """
    return _ops.topk(scores, k, softmax, f32_values)
