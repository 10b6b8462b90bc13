#pragma once
// FP8 quantization with fp32 scales, and its inverse: activations and weights into the e4m3 or
// e5m2 values and scales that FP8 GEMMs (DeepGEMM-style grouped GEMMs, torch._scaled_mm) consume.
//
// x: [..., N] of f32, bf16 or f16, N >= 1. The last dim is contiguous; the leading dims are seen
//   as M rows and must collapse into one row stride (rows may be strided). M = 0 is allowed.
// values: x's shape, f8e4m3 (OCP e4m3fn, max 448) or f8e5m2 (max 57344), last dim contiguous,
//   leading dims collapsing into one row stride (its own).
// Granularity: one fp32 scale per tile of x seen as [M, N]:
//   tensor  one tile, M x N             scales: one f32 element ([] or [1])
//   row     1 x N (a token)             scales: [..., 1] (x's leading dims) or [M, 1]
//   group   1 x 128 along N             scales: [..., G] or [M, G], G = ceil(N / 128)
//   block   128 x 128 (weights)         scales: [ceil(M / 128), G]
//   The last group (block) of a row (column) is partial when N (M) is not a multiple of 128.
// Scale layouts: scales are written through their view's strides, so the caller picks the
//   layout. Row-major [M, G] (strides [G, 1]) is what DeepSeek-V3's reference kernels and
//   SGLang's per_token_group_quant_fp8 give. The "MN-major" layout Hopper FP8 GEMMs read the
//   activation scales in (DeepGEMM's get_col_major_tma_aligned_tensor) is the same [M, G] view
//   with strides [1, M4], M4 = M rounded up to a multiple of 4 (each group's column of M scales
//   contiguous and 16-byte aligned): pass that view and the kernel writes it directly, with no
//   transpose afterwards (the torch API offers it as scale_layout="mn_major"). Block scales are
//   usually row-major [ceil(M/128), G] (DeepGEMM's weight scales); any strides work.
//   Scales' leading dims (x's, for row and group) must collapse into one row stride.
//
// Math, in fp32 exactly as written (the reference does the same fp32 operations, so the CUDA
// kernels match it bit for bit):
//   amax  = max |x| over the tile (NaN elements ignored; 0 for an empty tile)
//   amax  = min(max(amax, amax_floor), amax_ceiling)
//   scale = amax / fp8_max                      (fp8_max = 448 for e4m3, 57344 for e5m2)
//   value = fp8(x * (1 / scale))                rounded to nearest even, saturated to +-fp8_max
// so x ~= value * scale, and the largest |x| of a tile lands on +-fp8_max. Multiplying by the
// reciprocal (vLLM's convention) rather than dividing keeps the kernel memory-bound; the two
// can differ by one fp8 step on rare ties.
// - amax_floor (default 1e-4, DeepGEMM's per_token_cast_to_fp8 clamp) is what an all-zero (or
//   nearly zero) tile gets: its scale is 1e-4 / fp8_max, a finite, normal fp32 whose reciprocal
//   is finite, so zeros quantize to zeros with no division by zero and no NaN, and a consumer
//   multiplying by the scale gets exact zeros. Must be in [1e-30, amax_ceiling].
// - amax_ceiling (default +inf; vLLM's scale_ub) bounds the scale: values beyond it saturate.
// - NaN stays NaN (it does not enter amax; it converts to the fp8 NaN, 0x7f or 0xff). +-inf
//   saturates to +-fp8_max when amax_ceiling is finite; otherwise an infinite amax makes the
//   tile's scale inf and its values 0 (inf: NaN), which dequantize to NaN: garbage in, visible out.
// - Static per-tensor scale (quantize_fp8_static): value = fp8(x * (1 / scale[0])), the scale
//   read on the device (not checked there: a non-positive or non-finite scale gives meaningless
//   values).
// Per-tensor dynamic on CUDA takes two passes over x: a deterministic absmax (each block folds
//   its maximum into one fp32 word with atomicMax on its bits: the maximum of non-negative floats
//   is their maximum as unsigned integers, and max is exact and order-free, so the result is the
//   same bits on every run), then the quantization. It needs quantize_fp8_workspace_size() bytes.
//   Every other granularity is one pass: a tile is loaded once, reduced, scaled and stored.
//
// Dequantization: out = fp32(value) * scale of the element's tile, rounded to out's dtype (f32,
//   bf16, f16); values and scales as above, out of values' shape.
//
// Devices: all tensors on one device; CPU runs the reference, CUDA the kernels on `stream`.
// Outputs are written, never accumulated into, and must not overlap the inputs. No allocation,
// no host synchronisation (CUDA-graph safe).
// Errors: kiln::Error naming op, argument, expected and given, for unsupported dtypes, a values
//   or out tensor of another shape, a scales tensor of the wrong shape or dtype (f32 only),
//   a group size other than 128, tensors on different devices, a non-contiguous last dim,
//   leading dims that do not collapse, amax_floor / amax_ceiling out of range, a short workspace.
// Bytes moved (what the benchmarks count): x read + values written + scales written (per-tensor
//   dynamic reads x twice; its figure counts x once, so it is at most 3/5 of a copy's rate).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kiln/core/core.h"

namespace kiln {

enum class QuantGranularity : uint8_t { tensor, row, group, block };

struct QuantConfig {
  QuantGranularity granularity = QuantGranularity::group;
  int64_t group_size = 128;  // group and block edge: 128 is the one supported value
  float amax_floor = 1e-4f;
  float amax_ceiling = INFINITY;
};

// Scratch bytes quantize_fp8 needs for x on x's device: 4 for per-tensor dynamic on CUDA (the
// running absmax), else 0.
size_t quantize_fp8_workspace_size(const TensorView& x, const QuantConfig& config);

// Dynamic scales: writes values and scales (see above).
void quantize_fp8(const TensorView& values, const TensorView& scales, const TensorView& x,
                  const QuantConfig& config, const Workspace& workspace = {},
                  Stream stream = nullptr);

// A given per-tensor scale (f32, one element, on x's device): writes values only.
void quantize_fp8_static(const TensorView& values, const TensorView& x, const TensorView& scale,
                         Stream stream = nullptr);

// out = values * scale of each element's tile, scales laid out as quantize_fp8 writes them for
// `granularity` (group_size 128).
void dequantize_fp8(const TensorView& out, const TensorView& values, const TensorView& scales,
                    QuantGranularity granularity, Stream stream = nullptr);

std::string_view granularity_name(QuantGranularity g);

}  // namespace kiln
