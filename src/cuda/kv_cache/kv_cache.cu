// kv_cache_write: a block per token (grid-stride over tokens); its threads copy the token's
// [Hkv, D] of k and v into the slot's row of each cache, element by element, through fp32 (x /
// scale for e4m3 caches, saturating). A slot past the cache is counted by thread 0, never written.
#include <cuda_fp8.h>

#include <algorithm>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/fp8_pack.cuh"
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

// Token t's slot, or -1 to skip it: padding (a negative slot), or a slot past the cache, which
// thread 0 counts and nobody writes.
__device__ __forceinline__ int64_t checked_slot(const KvCacheArgs& p, int64_t t) {
  const int64_t slot =
      p.slots64 ? static_cast<const int64_t*>(p.slots)[t] : static_cast<const int32_t*>(p.slots)[t];
  if (slot >= p.capacity) {
    if (threadIdx.x == 0 && p.bad_slots != nullptr) atomicAdd(p.bad_slots, 1);
    return -1;
  }
  return slot;
}

template <typename T, typename C>
__global__ void __launch_bounds__(kThreads) kv_cache_kernel(const __grid_constant__ KvCacheArgs p) {
  const int64_t row = p.heads * p.head_dim;
  for (int64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
    const int64_t slot = checked_slot(p, t);
    if (slot < 0) continue;
    for (int64_t e = threadIdx.x; e < row; e += blockDim.x) {
      const float scale = p.scale ? p.scale[p.scale_per_head ? e / p.head_dim : 0] : 1.f;
      store_cache(static_cast<C*>(p.key_cache) + slot * row + e,
                  to_float(static_cast<const T*>(p.k)[t * p.k_stride + e]) / scale);
      store_cache(static_cast<C*>(p.value_cache) + slot * row + e,
                  to_float(static_cast<const T*>(p.v)[t * p.v_stride + e]) / scale);
    }
  }
}

// 16-byte accesses, 8 elements a thread (one head holds whole vectors: head_dim % 8 == 0), a
// block sized to the row's vectors: the default when everything is 16-byte aligned (the receipt
// says vec8). H100, 32768 x 8 x 128 bf16 (bench/results/2026-11-23-h100-s4): 0.127 -> 0.076 ms
// into a bf16 cache, 0.138 -> 0.061 ms into e4m3, against the scalar kernel above (which stays
// for unaligned views).
constexpr int kVecWidth = 8;

template <typename T, typename C>
__global__ void __launch_bounds__(kThreads)
    kv_cache_vec_kernel(const __grid_constant__ KvCacheArgs p) {
  const int64_t row = p.heads * p.head_dim;
  for (int64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
    const int64_t slot = checked_slot(p, t);
    if (slot < 0) continue;
    for (int64_t e = threadIdx.x * kVecWidth; e < row; e += blockDim.x * kVecWidth) {
      float kx[kVecWidth], vx[kVecWidth];
      load_floats<T, kVecWidth>(static_cast<const T*>(p.k) + t * p.k_stride + e, kx);
      load_floats<T, kVecWidth>(static_cast<const T*>(p.v) + t * p.v_stride + e, vx);
      if constexpr (std::is_same_v<C, __nv_fp8_storage_t>) {
        // x / scale in fp32 (as the reference divides), then the paired satfinite conversion.
        const float scale = p.scale ? p.scale[p.scale_per_head ? e / p.head_dim : 0] : 1.f;
#pragma unroll
        for (int i = 0; i < kVecWidth; ++i) {
          kx[i] = kx[i] / scale;
          vx[i] = vx[i] / scale;
        }
        using Bytes = Pack<uint8_t, kVecWidth>;
        *reinterpret_cast<Bytes*>(static_cast<uint8_t*>(p.key_cache) + slot * row + e) =
            to_fp8<__NV_E4M3, kVecWidth>(kx, 1.f);
        *reinterpret_cast<Bytes*>(static_cast<uint8_t*>(p.value_cache) + slot * row + e) =
            to_fp8<__NV_E4M3, kVecWidth>(vx, 1.f);
      } else {
        store_floats<T, kVecWidth>(static_cast<C*>(p.key_cache) + slot * row + e, kx);
        store_floats<T, kVecWidth>(static_cast<C*>(p.value_cache) + slot * row + e, vx);
      }
    }
  }
}

bool kv_vector_aligned(const KvCacheProblem& p) {
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return p.head_dim % kVecWidth == 0 && p.k_stride % kVecWidth == 0 &&
         p.v_stride % kVecWidth == 0 && aligned(p.k) && aligned(p.v) && aligned(p.key_cache) &&
         aligned(p.value_cache);
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
      const bool vec = kv_vector_aligned(p);
      if (vec) {
        const int64_t vectors = p.heads * p.head_dim / kVecWidth;
        const int threads =
            static_cast<int>(std::clamp<int64_t>((vectors + 31) / 32 * 32, 32, kThreads));
        kv_cache_vec_kernel<T, C><<<grid, threads, 0, stream>>>(args);
      } else {
        kv_cache_kernel<T, C><<<grid, kThreads, 0, stream>>>(args);
      }
      KILN_CUDA_CHECK(cudaGetLastError());
      variant = std::string(vec ? "kv_cache_write_vec8<" : "kv_cache_write<") +
                std::string(dtype_name(p.dtype)) +
                ",cache:" + std::string(dtype_name(p.cache_dtype)) +
                (p.scale ? (p.scale_per_head ? ",scale:head" : ",scale:tensor") : "") + ">";
    });
  });
  return variant;
}

}  // namespace kiln::cuda
