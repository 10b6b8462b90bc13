"""FP8 quantization (contract: include/kiln/ops/quantize.h)."""

from __future__ import annotations

import torch

_ops = torch.ops.kiln

GRANULARITIES = ("tensor", "row", "group", "block")


def quantize_fp8(
    x: torch.Tensor,
    dtype: torch.dtype = torch.float8_e4m3fn,
    granularity: str = "group",
    *,
    scale: torch.Tensor | None = None,
    scale_layout: str = "row_major",
    amax_floor: float = 1e-4,
    amax_ceiling: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., N] (float32/bfloat16/float16, last dim contiguous) -> (values, scales): values of
    x's shape in dtype (torch.float8_e4m3fn, max 448, or torch.float8_e5m2, max 57344), fp32 scales
    with x ~= values * scale.

    granularity: "tensor" (scales [1]), "row" ([..., 1]), "group" (1 x 128 along N: [..., G],
    G = ceil(N / 128)) or "block" (128 x 128: [ceil(M / 128), G], M = x.numel() // N).
    scale_layout (group only): "row_major", or "mn_major" ([..., G] with strides [..., 1, M4],
    M4 = M rounded up to 4: the TMA-aligned layout DeepGEMM-style FP8 GEMMs read).
    Per tile: scale = min(max(absmax, amax_floor), amax_ceiling) / fp8_max and values =
    saturate(x * (1 / scale)); an all-zero tile gets amax_floor (zeros stay zeros), NaN stays NaN.
    scale: a given per-tensor float32 [1] scale (granularity "tensor"); returned as is.
    """
    if scale is not None:
        if granularity != "tensor":
            raise ValueError(f"quantize_fp8: a given scale is per tensor, not per {granularity}")
        return _ops.quantize_fp8_static(x, scale, dtype), scale
    if scale_layout not in ("row_major", "mn_major"):
        raise ValueError(f"quantize_fp8: scale_layout is row_major or mn_major, not {scale_layout}")
    return _ops.quantize_fp8(
        x, dtype, granularity, scale_layout == "mn_major", amax_floor, amax_ceiling
    )


def dequantize_fp8(
    values: torch.Tensor,
    scales: torch.Tensor,
    granularity: str = "group",
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """values * scale of each element's tile, as dtype (float32/bfloat16/float16); scales as
    quantize_fp8 returns them for granularity (any layout)."""
    return _ops.dequantize_fp8(values, scales, granularity, dtype)
