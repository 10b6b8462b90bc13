"""kiln: fused GPU kernels for hybrid LLMs, as PyTorch ops.

The ops live in ``torch.ops.kiln`` (registered by the compiled ``kiln._C``); this package adds
their fake (meta) impls and autograd formulas, a functional API (``kiln.rms_norm``, ``kiln.swiglu``, ...),
``kiln.nn`` modules and ``kiln.last_receipt()``.

CPU tensors run kiln's float64 reference backend (slow, exact: the spec); CUDA tensors run the
kernels on the current stream. Inputs kiln does not take (say float64, or a last dim that is not
contiguous) raise ``RuntimeError`` with kiln's message: the op, the argument, what was expected and
what was given.
"""

from __future__ import annotations

import dataclasses

import torch  # noqa: F401  (loads libtorch before the extension that links it)

from . import _C
from . import _ops  # noqa: F401  (fake impls and autograd of torch.ops.kiln.*)
from . import functional, nn
from .functional import *  # noqa: F401,F403  (the functional API, re-exported)

# The package exports the functional API (its list lives in kiln/functional) plus these.
__all__ = ["Receipt", "last_receipt", "nn", *functional.__all__]


@dataclasses.dataclass(frozen=True)
class Receipt:
    """What one kiln call ran.

    op: the op ("rms_norm"); backend: "reference" (CPU) or "cuda"; variant: the kernel that ran;
    note: what was requested when it differs from what ran ("" otherwise).
    """

    op: str
    backend: str
    variant: str
    note: str

    def __str__(self) -> str:
        s = f"{self.op} backend={self.backend} variant={self.variant}"
        return s + (f' note="{self.note}"' if self.note else "")


def last_receipt() -> Receipt:
    """The receipt of the latest kiln op run on this thread.

    Receipts are per thread: autograd runs the backward of CUDA tensors on its own device thread,
    so after ``loss.backward()`` this still shows the last op this thread ran.
    """
    return Receipt(**_C.last_receipt())
