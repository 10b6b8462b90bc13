#pragma once
// The device pieces fused_moe's GEMV-style decode kernels share (fused_moe.cu: a block per pick;
// fused_moe_experts.cu: a block per expert's run of picks): the kernel arguments, the pick ->
// local expert lookup that never dereferences a bad id, and a warp's fp32 dot products over bf16,
// f16 or e4m3 weight rows (e4m3 rows scaled by their 128 x 128 block scales).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "cuda/common/elements.cuh"
#include "cuda/common/fp8_pack.cuh"
#include "cuda/common/warp_reduce.cuh"
#include "cuda/moe/fused_moe_launch.h"
#include "kiln/core/stream.h"
#include "ops/moe_problem.h"

namespace kiln::cuda::moe_gemv {

struct MoeArgs {
  const void* x;  // [T, H], rows x_stride apart
  int64_t x_stride;
  const void* w13;       // [E_local, 2I or I, H]
  const void* w2;        // [E_local, H, I]
  const float* weights;  // [T, k], rows weights_stride apart
  int64_t weights_stride;
  const int32_t* ids;  // [T, k], rows ids_stride apart
  int64_t ids_stride;
  const int32_t* expert_map;  // [E] or null (identity)
  void* act;                  // [T * k, I] scratch, x's dtype
  void* out;                  // [T, H], rows out_stride apart
  int64_t out_stride;
  int32_t* bad_ids;  // [1] counter
  int64_t hidden, inter, k;
  int64_t experts, local_experts;
  // FP8 weights' 128 x 128 block scales (null for bf16/f16 weights; never read then):
  // w13_scale [E_local, r13_blocks, h_blocks], w2_scale [E_local, h_blocks, i_blocks].
  const float* w13_scale;
  const float* w2_scale;
  int64_t r13_blocks, h_blocks, i_blocks;
};

// The local expert of pick (t, j); -1 when the pick is dropped (map value -1) or bad (its id or
// map value out of range: see the file comment); *bad says which.
__device__ __forceinline__ int64_t local_expert(const MoeArgs& a, int64_t t, int64_t j,
                                                bool* bad = nullptr) {
  const int64_t id = a.ids[t * a.ids_stride + j];
  const bool id_ok = id >= 0 && id < a.experts;
  const int64_t e = !id_ok ? -2 : a.expert_map ? a.expert_map[id] : id;
  const bool ok = e >= -1 && e < a.local_experts;
  if (bad != nullptr) *bad = !ok;
  return ok ? e : -1;
}

// One lane's kVec weights as floats: bf16/f16 widened, e4m3 bytes converted exactly.
template <typename W, int kVec>
__device__ __forceinline__ void weight_floats(const Pack<W, kVec>& w, float (&out)[kVec]) {
  if constexpr (std::is_same_v<W, uint8_t>) {
    from_fp8<__NV_E4M3, kVec>(w, out);
  } else {
    widen(w, out);
  }
}

// The partial dot product of kVec weights (already floats) with kVec activations, added into
// acc; kScaled (FP8 weights) sums the pack first and adds it times its block's scale (a pack
// never straddles a 128-wide block).
template <bool kScaled, typename T, int kVec>
__device__ __forceinline__ float floats_dot(const float (&w)[kVec], const Pack<T, kVec>& v,
                                            float scale, float acc) {
  float x[kVec];
  widen(v, x);
  if constexpr (kScaled) {
    float part = 0.f;
#pragma unroll
    for (int m = 0; m < kVec; ++m) part = fmaf(w[m], x[m], part);
    return fmaf(part, scale, acc);
  } else {
#pragma unroll
    for (int m = 0; m < kVec; ++m) acc = fmaf(w[m], x[m], acc);
    return acc;
  }
}

// floats_dot of one lane's packed weights (W: bf16/f16, or e4m3 bytes with their block scale).
template <typename W, typename T, int kVec>
__device__ __forceinline__ float pack_dot(const Pack<W, kVec>& w, const Pack<T, kVec>& v,
                                          float scale, float acc) {
  float a[kVec];
  weight_floats(w, a);
  return floats_dot<std::is_same_v<W, uint8_t>>(a, v, scale, acc);
}

// u · v over n elements in fp32, by the whole warp (every lane gets the sum): u a weight row (of
// W), v an activation row (of T). FP8 rows carry their block scales: scales[c / 128] for element
// c. kVec > 1 needs n % kVec == 0 and both rows 16-byte aligned.
// Unrolled kUnroll packs a lane so the loads of several packs can be in flight together. On the
// H100 (DeepSeek-V3 shapes) this took the e4m3 path from 0.296 to 0.159 ms at T = 1 and from 16.6
// to 5.8 ms at T = 64, and bf16 T = 16 from 3.25 to 3.19 ms, but bf16 T = 1 from 0.253 to 0.270.
template <typename W, typename T, int kVec>
__device__ __forceinline__ float warp_dot(const W* u, const float* scales, const T* v, int64_t n,
                                          int lane) {
  constexpr bool kFp8 = std::is_same_v<W, uint8_t>;
  static_assert(!kFp8 || 128 % kVec == 0, "an FP8 pack stays within one scale block");
  constexpr int kUnroll = 4;
  constexpr int64_t kStep = 32 * kVec;
  auto scale_at = [&](int64_t i) { return kFp8 ? scales[i >> 7] : 1.f; };
  float acc = 0.f;
  int64_t i = int64_t{lane} * kVec;
  for (; i + (kUnroll - 1) * kStep < n; i += kUnroll * kStep) {
    Pack<W, kVec> wp[kUnroll];
    Pack<T, kVec> vp[kUnroll];
    float sc[kUnroll];
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) {
      wp[r] = *reinterpret_cast<const Pack<W, kVec>*>(u + i + r * kStep);
      vp[r] = *reinterpret_cast<const Pack<T, kVec>*>(v + i + r * kStep);
      sc[r] = scale_at(i + r * kStep);
    }
#pragma unroll
    for (int r = 0; r < kUnroll; ++r) acc = pack_dot<W, T, kVec>(wp[r], vp[r], sc[r], acc);
  }
  for (; i < n; i += kStep) {
    acc = pack_dot<W, T, kVec>(*reinterpret_cast<const Pack<W, kVec>*>(u + i),
                               *reinterpret_cast<const Pack<T, kVec>*>(v + i), scale_at(i), acc);
  }
  return warp_sum(acc);
}

// Row r's scales in a [E_local, row_blocks, col_blocks] scale tensor; null for bf16/f16 weights.
template <typename W>
__device__ __forceinline__ const float* scale_row(const float* scales, int64_t e, int64_t r,
                                                  int64_t row_blocks, int64_t col_blocks) {
  if constexpr (std::is_same_v<W, uint8_t>) {
    return scales + (e * row_blocks + (r >> 7)) * col_blocks;
  } else {
    return nullptr;
  }
}

}  // namespace kiln::cuda::moe_gemv

namespace kiln::cuda {

// fused_moe_experts.cu: the decode kernels with the picks grouped by local expert (each touched
// expert's rows read once for all its tokens). With e4m3 weights and shapes mma_fits takes
// (H and I multiples of 64, 16-byte packs: up_vec and down_vec), on tensor cores
// (expert_mma.cuh), which fused_moe picks from kExpertsMmaMinEntries routed entries on; otherwise
// FMA kernels, run only when forced (KILN_FUSED_MOE=gemv_experts): not faster than the per-pick
// kernels. `a` is the per-pick kernels' argument block (its act scratch is replaced), g their
// grid (the column blocks are the same); up_vec / down_vec as there. fits: I > 0 and at most
// kMoeAlignMaxLocalExperts local experts (the align kernel's limit).
bool fused_moe_experts_mma_fits(const MoeProblem& p, bool up_vec, bool down_vec);
bool fused_moe_experts_fits(const MoeProblem& p);
std::string fused_moe_experts(const MoeProblem& p, moe_gemv::MoeArgs a, const FusedMoeGrid& g,
                              bool up_vec, bool down_vec, Stream stream);

}  // namespace kiln::cuda
