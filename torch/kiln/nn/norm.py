"""RMSNorm and LayerNorm modules over kiln's normalization ops, with an optional fused residual."""

from __future__ import annotations

import torch

from .. import functional as F


class RMSNorm(torch.nn.Module):
    """RMSNorm over the last dim: y = x / sqrt(mean(x^2) + eps) * weight.

    Args:
        hidden: N, the size of the last dim.
        eps: added to the mean square.
        elementwise_affine: learn weight [N] (initialised to ones); without it weight is None.
        dtype, device: of weight (float32 by default). float32 weights serve bf16/fp16 inputs.

    forward(x) -> y; forward(x, residual) -> (y, residual_out) with residual_out = x + residual and
    y = RMSNorm(residual_out), fused in one pass. x, residual: [..., N] float32/bfloat16/float16.
    """

    def __init__(
        self,
        hidden: int,
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = torch.nn.Parameter(torch.empty(hidden, dtype=dtype, device=device))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return F.rms_norm(x, self.weight, self.eps)
        return F.add_rms_norm(x, residual, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.hidden}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class LayerNorm(torch.nn.Module):
    """LayerNorm over the last dim: y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias.

    Args:
        hidden: N, the size of the last dim.
        eps: added to the (biased) variance.
        elementwise_affine: learn weight [N] (ones) and, with ``bias``, bias [N] (zeros).
        bias: learn a bias (only with elementwise_affine).
        dtype, device: of the parameters (float32 by default).

    forward(x) -> y; forward(x, residual) -> (y, residual_out) with residual_out = x + residual and
    y = LayerNorm(residual_out), fused in one pass. x, residual: [..., N] float32/bfloat16/float16.
    """

    def __init__(
        self,
        hidden: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = torch.nn.Parameter(torch.empty(hidden, dtype=dtype, device=device))
            if bias:
                self.bias = torch.nn.Parameter(torch.empty(hidden, dtype=dtype, device=device))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            torch.nn.init.ones_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if residual is None:
            return F.layer_norm(x, self.weight, self.bias, self.eps)
        return F.add_layer_norm(x, residual, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.hidden}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )
