"""The out-of-range counts the index-taking ops report (rows never read or written).

KILN_CHECK_INDICES=1 (debugging): every such call counts, synchronises and raises when its count
is not zero. Otherwise a call counts only when the caller asks for the count (return_bad_count=True),
so that no zero-fill kernel runs for a count nobody reads.
"""

from __future__ import annotations

import os

import torch

CHECK = os.environ.get("KILN_CHECK_INDICES") == "1"


def wanted(return_bad_count: bool) -> bool:
    """Whether the op should keep a count: asked for, or KILN_CHECK_INDICES=1."""
    return return_bad_count or CHECK


def check(bad: torch.Tensor, message: str, error: type[Exception] = IndexError) -> None:
    """With KILN_CHECK_INDICES=1, raises error(message.format(count)) when the count is not 0."""
    if CHECK and int(bad.item()) != 0:
        raise error(message.format(int(bad.item())))
