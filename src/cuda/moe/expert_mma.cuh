#pragma once
// fused_moe's by-expert kernels for e4m3 weights on tensor cores (w8a16 decode, T * k large
// enough that an expert's run holds several picks). A run's picks are the 16 rows of one
// m16n8k16 MMA's A operand (x's or the intermediate's rows, bf16 or f16 as they are), eight
// weight rows its B operand (e4m3 pairs converted exactly to f16, then to bf16 for bf16
// activations), so each weight byte is read and converted once for all the run's picks. The FMA
// by-expert kernels spend instructions in proportion to the picks a row serves and were no faster
// than the per-pick kernels at DeepSeek-V3's T = 64 (H100, s9); the GEMV lab
// (bench/lab/gemv_fp8_tokens_lab.cu, H100, s10) read e4m3 weights at 2457-2656 GB/s for 1 to 8
// tokens this way, and at 248-1733 GB/s on FMAs.
//
// Block (run, 8 weight rows n0 .. n0 + 7): warp w takes the 64-column chunks w, w + 8, ... of K;
// lane (g, p) = (lane / 4, lane % 4) loads 16 weights of row n0 + g at columns c = chunk + 16 p
// and the same 16 columns of picks g and g + 8, which feed four MMAs (k slots 2p, 2p + 1 <-
// columns c + 4q, +1 and slots 2p + 8, 2p + 9 <- c + 4q + 2, +3 for MMA q: the permutation is the
// same for A and B, so the sum is the dot product). A chunk lies inside one 128-column scale
// block, so its MMA sums are scaled once; the warps' sums meet in shared memory, added in warp
// order (the same bits every run).
// Needs K % 64 == 0, 8 | the weight rows, 16-byte aligned rows.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "cuda/common/elements.cuh"
#include "cuda/common/mma.cuh"
#include "cuda/moe/expert_runs.cuh"
#include "cuda/moe/fused_moe_launch.h"
#include "cuda/moe/moe_gemv.cuh"
#include "ops/activation_math.h"

namespace kiln::cuda::moe_gemv {

inline constexpr int kMmaRows = 8;  // weight rows a block: the MMA's N
// The gated up kernel's blocks a SM: three cap it at 80 registers, with 20 bytes spilled (84-86
// unbounded: two blocks). Measured only this way (3.69 ms at DeepSeek-V3's w8a16 T = 64).
inline constexpr int kMmaUpBlocksPerSm = 3;

// Two e4m3 weights as one B-fragment register of T (f16 or bf16), exactly.
template <typename T>
__device__ __forceinline__ uint32_t e4m3_pair_as(uint16_t pair) {
  const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3));
  if constexpr (std::is_same_v<T, __half>) {
    return *reinterpret_cast<const uint32_t*>(&h);
  } else {
    const float2 f = __half22float2(h);
    return pack_pair<__nv_bfloat16>(f.x, f.y);
  }
}

// This lane's part of a block's sums over K: acc[m][0..1] = pick g with rows 2p, 2p + 1 of
// weight matrix m, acc[m][2..3] = pick g + 8 with them. w[m]: row n0 + g of matrix m; scales[m]:
// the 128-row block's scales along K; x0 / x1: picks g / g + 8 (null: a zero row). kUpper false:
// no pick past the 8th (x1 unread), the common case in decode, with half the loads in registers.
template <typename T, int kMats, bool kUpper>
__device__ __forceinline__ void mma_rows(const uint8_t* const (&w)[kMats],
                                         const float* const (&scales)[kMats], const T* x0,
                                         const T* x1, int64_t n, int warp, int p,
                                         float (&acc)[kMats][4]) {
  constexpr int64_t kWarpStep = 64 * kFusedMoeWarps;
  struct Packs {
    uint4 w[kMats];
    uint4 x[kUpper ? 4 : 2];  // pick g: columns c .. c + 15, then pick g + 8
  };
  auto load = [&](int64_t chunk, Packs& d) {
    const int64_t c = chunk + 16 * p;
#pragma unroll
    for (int m = 0; m < kMats; ++m) d.w[m] = *reinterpret_cast<const uint4*>(w[m] + c);
    const uint4 zero = make_uint4(0, 0, 0, 0);
    d.x[0] = x0 ? *reinterpret_cast<const uint4*>(x0 + c) : zero;
    d.x[1] = x0 ? *reinterpret_cast<const uint4*>(x0 + c + 8) : zero;
    if constexpr (kUpper) {
      d.x[2] = x1 ? *reinterpret_cast<const uint4*>(x1 + c) : zero;
      d.x[3] = x1 ? *reinterpret_cast<const uint4*>(x1 + c + 8) : zero;
    }
  };
  auto use = [&](int64_t chunk, const Packs& d) {
    const uint32_t* lo = reinterpret_cast<const uint32_t*>(&d.x[0]);
    const uint32_t* hi = reinterpret_cast<const uint32_t*>(&d.x[kUpper ? 2 : 0]);
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
      const uint16_t* pairs = reinterpret_cast<const uint16_t*>(&d.w[m]);
      float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint32_t a[4] = {lo[2 * q], kUpper ? hi[2 * q] : 0u, lo[2 * q + 1],
                               kUpper ? hi[2 * q + 1] : 0u};
        mma_16816<T>(part, a, e4m3_pair_as<T>(pairs[2 * q]), e4m3_pair_as<T>(pairs[2 * q + 1]));
      }
      const float s = scales[m][chunk >> 7];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[m][i] = fmaf(part[i], s, acc[m][i]);
    }
  };
  // Two chunks' loads in flight before either is used.
  int64_t chunk = 64 * int64_t{warp};
  for (; chunk + kWarpStep < n; chunk += 2 * kWarpStep) {
    Packs d0, d1;
    load(chunk, d0);
    load(chunk + kWarpStep, d1);
    use(chunk, d0);
    use(chunk + kWarpStep, d1);
  }
  if (chunk < n) {
    Packs d;
    load(chunk, d);
    use(chunk, d);
  }
}

// A block's sums over K: each warp's mma_rows part, then [kMats][16 picks][8 rows] added in warp
// order.
template <int kMats>
struct BlockSums {
  float part[kFusedMoeWarps][kMats][kExpertRun][kMmaRows];

  // Every thread of the block: its warp's part for a run of `count` picks (row_of(pick): the
  // pick's activation row, null past the run), put in place, then a barrier. w, scales, warp, g
  // and p as in mma_rows.
  template <typename T, typename RowOf>
  __device__ __forceinline__ void gather(const uint8_t* const (&w)[kMats],
                                         const float* const (&scales)[kMats], int count,
                                         const RowOf& row_of, int64_t n, int warp, int g, int p) {
    float acc[kMats][4] = {};
    if (count > 8) {
      mma_rows<T, kMats, true>(w, scales, row_of(g), row_of(g + 8), n, warp, p, acc);
    } else {
      mma_rows<T, kMats, false>(w, scales, row_of(g), nullptr, n, warp, p, acc);
    }
    put(acc, warp, g, p);
    __syncthreads();
  }

  __device__ __forceinline__ void put(const float (&acc)[kMats][4], int warp, int g, int p) {
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
      part[warp][m][g][2 * p] = acc[m][0];
      part[warp][m][g][2 * p + 1] = acc[m][1];
      part[warp][m][g + 8][2 * p] = acc[m][2];
      part[warp][m][g + 8][2 * p + 1] = acc[m][3];
    }
  }
  __device__ __forceinline__ float total(int m, int pick, int row) const {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kFusedMoeWarps; ++w) s += part[w][m][pick][row];
    return s;
  }
};

// Block (run, y): act[entry, y * 8 + r] for the run's picks and r < 8.
template <typename T, act::Kind K>
__global__ void __launch_bounds__(kFusedMoeWarps * 32, kMmaUpBlocksPerSm)
    moe_up_experts_mma_kernel(const __grid_constant__ MoeArgs a,
                              const __grid_constant__ ExpertRuns r) {
  constexpr bool kGated = K != act::Kind::relu2;
  constexpr int kMats = kGated ? 2 : 1;
  __shared__ BlockSums<kMats> sums;
  const Run run = load_run(r);
  if (run.expert < 0 || run.count == 0) return;  // the same for the whole block
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, p = lane % 4;
  const int64_t n0 = int64_t{blockIdx.y} * kMmaRows, e = run.expert;
  const int64_t rows13 = kGated ? 2 * a.inter : a.inter;
  const uint8_t* gate = static_cast<const uint8_t*>(a.w13) + (e * rows13 + n0 + g) * a.hidden;
  const uint8_t* w[kMats] = {gate};
  const float* scales[kMats] = {scale_row<uint8_t>(a.w13_scale, e, n0, a.r13_blocks, a.h_blocks)};
  if constexpr (kGated) {
    w[1] = gate + a.inter * a.hidden;
    scales[1] = scale_row<uint8_t>(a.w13_scale, e, a.inter + n0, a.r13_blocks, a.h_blocks);
  }
  const T* x = static_cast<const T*>(a.x);
  auto row_of = [&](int pick) {
    return pick < run.count ? x + run.entry[pick] / a.k * a.x_stride : nullptr;
  };
  sums.template gather<T>(w, scales, run.count, row_of, a.hidden, warp, g, p);
  const int pick = threadIdx.x / kMmaRows, row = threadIdx.x % kMmaRows;
  if (pick < run.count) {
    const float up = kGated ? sums.total(kMats - 1, pick, row) : 0.f;
    static_cast<T*>(a.act)[int64_t{run.entry[pick]} * a.inter + n0 + row] =
        from_float<T>(act::forward<float>(K, sums.total(0, pick, row), up));
  }
}

// Block (run, y): partial[entry, y * 8 + r] = routing weight * (w2[e] row · act[entry]).
template <typename T>
__global__ void __launch_bounds__(kFusedMoeWarps * 32)
    moe_down_experts_mma_kernel(const __grid_constant__ MoeArgs a,
                                const __grid_constant__ ExpertRuns r) {
  __shared__ BlockSums<1> sums;
  const Run run = load_run(r);
  if (run.expert < 0 || run.count == 0) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, p = lane % 4;
  const int64_t n0 = int64_t{blockIdx.y} * kMmaRows, e = run.expert;
  const uint8_t* w[1] = {static_cast<const uint8_t*>(a.w2) + (e * a.hidden + n0 + g) * a.inter};
  const float* scales[1] = {scale_row<uint8_t>(a.w2_scale, e, n0, a.h_blocks, a.i_blocks)};
  const T* act = static_cast<const T*>(a.act);
  auto row_of = [&](int pick) {
    return pick < run.count ? act + int64_t{run.entry[pick]} * a.inter : nullptr;
  };
  sums.template gather<T>(w, scales, run.count, row_of, a.inter, warp, g, p);
  const int pick = threadIdx.x / kMmaRows, row = threadIdx.x % kMmaRows;
  if (pick < run.count) {
    const int64_t entry = run.entry[pick];
    const float weight = a.weights[entry / a.k * a.weights_stride + entry % a.k];
    r.partial[entry * a.hidden + n0 + row] = weight * sums.total(0, pick, row);
  }
}

}  // namespace kiln::cuda::moe_gemv
