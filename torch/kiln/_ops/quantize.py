"""Fake impls of the FP8 quantization ops (torch/csrc/quantize.cpp): outputs of the shapes, dtypes
and strides the C++ impls allocate. No autograd: quantization feeds FP8 GEMMs, not gradients."""

from __future__ import annotations

import math

import torch
from torch.library import register_fake


def new_scales(x: torch.Tensor, granularity: str, mn_major: bool) -> torch.Tensor:
    """The fp32 scales quantize_fp8 returns for x: tensor [1]; row [..., 1]; group [..., G]
    (row-major, or MN-major: strides [..., 1, M4], M4 = M rounded up to 4); block [ceil(M/128), G]."""
    lead = list(x.shape[:-1])
    m = math.prod(lead)
    groups = (x.shape[-1] + 127) // 128
    if granularity == "tensor":
        return x.new_empty((1,), dtype=torch.float32)
    if granularity == "block":
        return x.new_empty(((m + 127) // 128, groups), dtype=torch.float32)
    sizes = [*lead, 1 if granularity == "row" else groups]
    if not mn_major:
        return x.new_empty(sizes, dtype=torch.float32)
    strides, stride = [0] * len(sizes), 1
    for d in range(len(lead) - 1, -1, -1):
        strides[d] = stride
        stride *= lead[d]
    strides[-1] = (m + 3) // 4 * 4
    return torch.empty_strided(sizes, strides, dtype=torch.float32, device=x.device)


@register_fake("kiln::quantize_fp8")
def _quantize_fp8_fake(x, dtype, granularity, mn_major, amax_floor, amax_ceiling):
    return x.new_empty(x.shape, dtype=dtype), new_scales(x, granularity, mn_major)


@register_fake("kiln::quantize_fp8_static")
def _quantize_fp8_static_fake(x, scale, dtype):
    return x.new_empty(x.shape, dtype=dtype)


@register_fake("kiln::dequantize_fp8")
def _dequantize_fp8_fake(values, scales, granularity, dtype):
    return values.new_empty(values.shape, dtype=dtype)
