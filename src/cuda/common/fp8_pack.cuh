#pragma once
// Device-side fp8 conversions by the hardware's paired instructions: fp32 pairs to e4m3x2 / e5m2x2
// (cvt.rn.satfinite: nearest even, saturating to +-max, NaN to NaN, as element.h's host
// conversions do), and fp8 pairs back through f16x2 (exact).
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "cuda/common/elements.cuh"

namespace kiln::cuda {

template <__nv_fp8_interpretation_t Q>
inline constexpr float kFp8Max = Q == __NV_E4M3 ? 448.f : 57344.f;

// W fp32 values, each times `mul`, into W fp8 bytes (element 2i in the low byte of pair i).
template <__nv_fp8_interpretation_t Q, int W>
__device__ __forceinline__ Pack<uint8_t, W> to_fp8(const float (&in)[W], float mul) {
  Pack<uint8_t, W> out;
  if constexpr (W % 2 == 0) {
    auto* pairs = reinterpret_cast<__nv_fp8x2_storage_t*>(&out);
#pragma unroll
    for (int i = 0; i < W / 2; ++i) {
      pairs[i] = __nv_cvt_float2_to_fp8x2(make_float2(in[2 * i] * mul, in[2 * i + 1] * mul),
                                          __NV_SATFINITE, Q);
    }
  } else {
#pragma unroll
    for (int i = 0; i < W; ++i) out.v[i] = __nv_cvt_float_to_fp8(in[i] * mul, __NV_SATFINITE, Q);
  }
  return out;
}

// W fp8 bytes to fp32, exactly.
template <__nv_fp8_interpretation_t Q, int W>
__device__ __forceinline__ void from_fp8(const Pack<uint8_t, W>& in, float (&out)[W]) {
  if constexpr (W % 2 == 0) {
    const auto* pairs = reinterpret_cast<const __nv_fp8x2_storage_t*>(&in);
#pragma unroll
    for (int i = 0; i < W / 2; ++i) {
      const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(pairs[i], Q));
      const float2 f = __half22float2(h);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < W; ++i) out[i] = __half2float(__half(__nv_cvt_fp8_to_halfraw(in.v[i], Q)));
  }
}

}  // namespace kiln::cuda
