#pragma once
// Device-side element types: conversions to and from fp32, and 16-byte packs for vector access.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kiln/core/dtype.h"

namespace kiln::cuda {

__device__ __forceinline__ float to_float(float v) {
  return v;
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

// W consecutive elements moved as one access (16 bytes when W = 16 / sizeof(T)).
template <typename T, int W>
struct alignas(sizeof(T) * W <= 16 ? sizeof(T) * W : 16) Pack {
  T v[W];
};

template <typename T, int W>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[W]) {
  const Pack<T, W> pack = *reinterpret_cast<const Pack<T, W>*>(p);
#pragma unroll
  for (int i = 0; i < W; ++i) out[i] = to_float(pack.v[i]);
}

template <typename T, int W>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[W]) {
  Pack<T, W> pack;
#pragma unroll
  for (int i = 0; i < W; ++i) pack.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, W>*>(p) = pack;
}

// The CUDA element type of a kiln float dtype.
template <DType D>
struct CudaType;
template <>
struct CudaType<DType::f32> {
  using type = float;
};
template <>
struct CudaType<DType::bf16> {
  using type = __nv_bfloat16;
};
template <>
struct CudaType<DType::f16> {
  using type = __half;
};

}  // namespace kiln::cuda
