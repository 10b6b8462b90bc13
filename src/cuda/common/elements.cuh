#pragma once
// Device-side element types: conversions to and from fp32, and 16-byte packs for vector access.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

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

// The pack's elements as fp32. bf16 and f16 pairs are widened from whole 32-bit words (one
// instruction an element for bf16: a shift or a mask), not element by element, which made the
// compiler split each word into 16-bit registers first (PRMT, then the shift): the norm kernels
// are issue-bound, so this is a few percent of their instructions.
template <typename T, int W>
__device__ __forceinline__ void widen(const Pack<T, W>& p, float (&out)[W]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> && W % 2 == 0) {
    const auto* words = reinterpret_cast<const uint32_t*>(&p);
#pragma unroll
    for (int i = 0; i < W / 2; ++i) {
      out[2 * i] = __uint_as_float(words[i] << 16);
      out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
  } else if constexpr (std::is_same_v<T, __half> && W % 2 == 0) {
    const auto* pairs = reinterpret_cast<const __half2*>(&p);
#pragma unroll
    for (int i = 0; i < W / 2; ++i) {
      const float2 f = __half22float2(pairs[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < W; ++i) out[i] = to_float(p.v[i]);
  }
}

// A pack with every element set to v, built a 32-bit word at a time for 16-bit types.
template <typename T, int W>
__device__ __forceinline__ Pack<T, W> splat(float v) {
  Pack<T, W> p;
  if constexpr (sizeof(T) == 2 && W % 2 == 0) {
    const T e = from_float<T>(v);
    const uint32_t bits = *reinterpret_cast<const uint16_t*>(&e);
    auto* words = reinterpret_cast<uint32_t*>(&p);
#pragma unroll
    for (int i = 0; i < W / 2; ++i) words[i] = bits | (bits << 16);
  } else {
#pragma unroll
    for (int i = 0; i < W; ++i) p.v[i] = from_float<T>(v);
  }
  return p;
}

// The unsigned integer of one access of B bytes (a pack of 2, 4, 8 or 16 bytes), and the pack
// moved through it: one LDG/STG of that width. Copying a Pack of 16-bit elements directly, or
// reading one through a reference to global memory, let nvcc split the access: the bf16 8-wide
// loads of moe_sum and mhc_mix compiled to four 32-bit LDGs and their stores to eight 16-bit
// STGs (s12 SASS).
template <int B>
using AccessWord = std::conditional_t<
    B == 2, uint16_t,
    std::conditional_t<B == 4, uint32_t, std::conditional_t<B == 8, uint2, uint4>>>;

template <typename T, int W>
inline constexpr bool kOneAccess = sizeof(T) * W == 2 || sizeof(T) * W == 4 || sizeof(T) * W == 8 ||
                                   sizeof(T) * W == 16;

template <typename T, int W>
__device__ __forceinline__ Pack<T, W> load_pack(const T* p) {
  if constexpr (kOneAccess<T, W>) {
    using Word = AccessWord<sizeof(T) * W>;
    const Word word = *reinterpret_cast<const Word*>(p);
    Pack<T, W> pack;
    __builtin_memcpy(&pack, &word, sizeof(Word));
    return pack;
  } else {
    return *reinterpret_cast<const Pack<T, W>*>(p);
  }
}

// p must point to global memory (the 8- and 16-byte stores are st.global); every caller's does.
template <typename T, int W>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, W>& pack) {
  if constexpr (kOneAccess<T, W>) {
    using Word = AccessWord<sizeof(T) * W>;
    Word word;
    __builtin_memcpy(&word, &pack, sizeof(Word));
    // A plain store of `word` was split too; __stwb's is a strong one (STG.STRONG.SM).
    if constexpr (sizeof(Word) == 16) {
      asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(word.x), "r"(word.y),
                   "r"(word.z), "r"(word.w)
                   : "memory");
    } else if constexpr (sizeof(Word) == 8) {
      asm volatile("st.global.v2.u32 [%0], {%1, %2};" ::"l"(p), "r"(word.x), "r"(word.y)
                   : "memory");
    } else {
      *reinterpret_cast<Word*>(p) = word;
    }
  } else {
    *reinterpret_cast<Pack<T, W>*>(p) = pack;
  }
}

template <typename T, int W>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[W]) {
  widen(load_pack<T, W>(p), out);
}

// fp32 values rounded (to nearest even) into a pack; 16-bit pairs are converted two at a time
// straight into their word (element 2i in the low half, as in memory).
template <typename T, int W>
__device__ __forceinline__ Pack<T, W> narrow(const float (&in)[W]) {
  Pack<T, W> pack;
  if constexpr (std::is_same_v<T, __nv_bfloat16> && W % 2 == 0) {
    auto* pairs = reinterpret_cast<__nv_bfloat162*>(&pack);
#pragma unroll
    for (int i = 0; i < W / 2; ++i) pairs[i] = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
  } else if constexpr (std::is_same_v<T, __half> && W % 2 == 0) {
    auto* pairs = reinterpret_cast<__half2*>(&pack);
#pragma unroll
    for (int i = 0; i < W / 2; ++i) pairs[i] = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
  } else {
#pragma unroll
    for (int i = 0; i < W; ++i) pack.v[i] = from_float<T>(in[i]);
  }
  return pack;
}

// W fp32 values rounded into global memory at p (one access, as store_pack).
template <typename T, int W>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[W]) {
  store_pack<T, W>(p, narrow<T, W>(in));
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
