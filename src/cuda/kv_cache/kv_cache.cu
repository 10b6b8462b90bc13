// kv_cache_write: a block per token (grid-stride over tokens); its threads copy the token's
// [Hkv, D] of k and v into the slot's row of each cache, element by element, through fp32 (x /
// scale for e4m3 caches, saturating). A slot past the cache is counted by thread 0, never written.
#include <cuda_fp8.h>

#include <algorithm>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/kv_cache/kv_cache_launch.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// The problem's device-side fields (the problem itself holds a std::string).
struct KvCacheArgs {
  DType dtype, cache_dtype;
  int64_t tokens, heads, head_dim, capacity;
  const void* k;
  const void* v;
  int64_t k_stride, v_stride;
  void* key_cache;
  void* value_cache;
  const void* slots;
  bool slots64;
  const float* scale;
  bool scale_per_head;
  int32_t* bad_slots;
};

template <typename C>
__device__ __forceinline__ void store_cache(C* p, float v) {
  if constexpr (std::is_same_v<C, __nv_fp8_storage_t>) {
    *p = __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
  } else {
    *p = from_float<C>(v);
  }
}

template <typename T, typename C>
__global__ void __launch_bounds__(kThreads) kv_cache_kernel(const __grid_constant__ KvCacheArgs p) {
  const int64_t row = p.heads * p.head_dim;
  for (int64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
    const int64_t slot = p.slots64 ? static_cast<const int64_t*>(p.slots)[t]
                                   : static_cast<const int32_t*>(p.slots)[t];
    if (slot < 0) continue;
    if (slot >= p.capacity) {
      if (threadIdx.x == 0) atomicAdd(p.bad_slots, 1);
      continue;
    }
    for (int64_t e = threadIdx.x; e < row; e += blockDim.x) {
      const float scale = p.scale ? p.scale[p.scale_per_head ? e / p.head_dim : 0] : 1.f;
      store_cache(static_cast<C*>(p.key_cache) + slot * row + e,
                  to_float(static_cast<const T*>(p.k)[t * p.k_stride + e]) / scale);
      store_cache(static_cast<C*>(p.value_cache) + slot * row + e,
                  to_float(static_cast<const T*>(p.v)[t * p.v_stride + e]) / scale);
    }
  }
}

}  // namespace

std::string kv_cache_write(const KvCacheProblem& p, Stream stream) {
  if (p.tokens == 0) return "empty";
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(p.tokens, 1 << 20));
  std::string variant;
  dispatch_value<DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.cache_dtype == DType::f8e4m3, [&](auto fp8) {
      using C = std::conditional_t<decltype(fp8)::value, __nv_fp8_storage_t, T>;
      const KvCacheArgs args{p.dtype,          p.cache_dtype, p.tokens, p.heads,    p.head_dim,
                             p.capacity,       p.k,           p.v,      p.k_stride, p.v_stride,
                             p.key_cache,      p.value_cache, p.slots,  p.slots64,  p.scale,
                             p.scale_per_head, p.bad_slots};
      kv_cache_kernel<T, C><<<grid, kThreads, 0, stream>>>(args);
      KILN_CUDA_CHECK(cudaGetLastError());
      variant = "kv_cache_write<" + std::string(dtype_name(p.dtype)) +
                ",cache:" + std::string(dtype_name(p.cache_dtype)) +
                (p.scale ? (p.scale_per_head ? ",scale:head" : ",scale:tensor") : "") + ">";
    });
  });
  return variant;
}

}  // namespace kiln::cuda
