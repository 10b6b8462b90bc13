"""The fake of an op's out-of-range count (torch/csrc/bad_count.h): int32 [1] when counted,
int32 [0] when the caller asked for no count."""

from __future__ import annotations

import torch


def fake_count(like: torch.Tensor, count_bad: bool = True) -> torch.Tensor:
    return like.new_empty((1 if count_bad else 0,), dtype=torch.int32)
