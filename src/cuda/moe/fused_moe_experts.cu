// fused_moe's decode path by expert: the picks grouped by local expert first, so each touched
// expert's weight rows are read (and, for e4m3, converted) once for all the tokens routed to it.
// The per-pick kernels (fused_moe.cu) read them once a pick: at DeepSeek-V3's T = 64 (512 picks
// over ~221 touched experts) that is 2.3 reads a row, and the w8a16 per-pick path reached 1695
// GB/s over the touched weights (H100, s9) where bf16's grouped GEMM reached 2913.
// Two forms of steps 2 and 3 below:
//  - e4m3 weights where the shape allows: a run's picks as the rows of tensor-core MMAs
//    (expert_mma.cuh); fused_moe takes it by default from kExpertsMmaMinEntries picks on.
//  - otherwise the GEMV-style FMA math of fused_moe.cu, only when forced
//    (KILN_FUSED_MOE=gemv_experts): on the H100 at b3900df it ran DeepSeek-V3's w8a16 T = 64 in
//    5.74 ms against the per-pick kernels' 5.89 and T = 16 in 2.12 against 1.73 (its instructions
//    grow with the picks a row serves).
//  1. moe_align (blocks of kExpertRun entries; bad ids and map values counted into bad_ids);
//  2. up: block (run b, 8 columns): warp i computes act[entry, i] for the entries of run b,
//     kChunk picks a pass over the weight row, rounded to x's dtype (the contract's rounding);
//  3. down: block (run b, 8 columns of H): warp h computes
//     partial[entry, h] = routing weight * (w2[e][h] · act[entry]) in fp32;
//  4. combine: out[t, h] = sum of partial[t k + j, h] over the token's kept picks, in order j
//     (the same sum every run).
// Scratch (act, partial, the align tables) is stream-ordered: no sync, capturable in a graph.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "core/dispatch.h"
#include "core/int_math.h"
#include "cuda/common/aligned.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/moe/expert_mma.cuh"
#include "cuda/moe/expert_runs.cuh"
#include "cuda/moe/fused_moe_launch.h"
#include "cuda/moe/moe_align_launch.h"
#include "cuda/moe/moe_gemv.cuh"
#include "kiln/ops/moe_align.h"
#include "ops/activation_math.h"

namespace kiln::cuda {
namespace {

using namespace moe_gemv;

// Picks a warp carries through one pass over a weight row (its accumulators stay in registers).
constexpr int kChunk = 4;

// Dots of one weight row u (n elements) with kRows activation rows v[0 .. kRows), by the whole
// warp: each weight pack is loaded and converted once and used for every row. A lane loads four
// weight packs and their block scales before using any, so several are in flight (the per-pick
// kernels' lesson), and x's packs for up to two rows with them; with more rows, each pack's rows
// are loaded together just before use (L1 hits: x is a few rows). The first cut loaded the scale
// and each row's x pack one after another inside the use, and ran at half the per-pick speed
// (H100, dbf6865: T = 16 3.42 ms against 1.75).
template <typename W, typename T, int kVec, int kRows>
__device__ __forceinline__ void warp_dots(const W* u, const float* scales, const T* const* v,
                                          int64_t n, int lane, float (&out)[kChunk]) {
  constexpr bool kFp8 = std::is_same_v<W, uint8_t>;
  constexpr bool kXAhead = kRows <= 2;
  constexpr int kUnroll = 4;
  constexpr int64_t kStep = 32 * kVec;
  using WPack = Pack<W, kVec>;
  using XPack = Pack<T, kVec>;
  float acc[kRows] = {};
  auto scale_at = [&](int64_t i) { return kFp8 ? scales[i >> 7] : 1.f; };
  int64_t i = int64_t{lane} * kVec;
  for (; i + (kUnroll - 1) * kStep < n; i += kUnroll * kStep) {
    WPack wp[kUnroll];
    float sc[kUnroll];
    XPack ahead[kXAhead ? kUnroll : 1][kRows];
#pragma unroll
    for (int q = 0; q < kUnroll; ++q) {
      wp[q] = *reinterpret_cast<const WPack*>(u + i + q * kStep);
      sc[q] = scale_at(i + q * kStep);
      if constexpr (kXAhead) {
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          ahead[q][r] = *reinterpret_cast<const XPack*>(v[r] + i + q * kStep);
        }
      }
    }
#pragma unroll
    for (int q = 0; q < kUnroll; ++q) {
      XPack xp[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if constexpr (kXAhead) {
          xp[r] = ahead[q][r];
        } else {
          xp[r] = *reinterpret_cast<const XPack*>(v[r] + i + q * kStep);
        }
      }
      float w[kVec];
      weight_floats(wp[q], w);
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r] = floats_dot<kFp8>(w, xp[r], sc[q], acc[r]);
    }
  }
  for (; i < n; i += kStep) {
    float w[kVec];
    weight_floats(*reinterpret_cast<const WPack*>(u + i), w);
    const float scale = scale_at(i);
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      acc[r] = floats_dot<kFp8>(w, *reinterpret_cast<const XPack*>(v[r] + i), scale, acc[r]);
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) out[r] = warp_sum(acc[r]);
}

// warp_dots for `rows` (1 .. kChunk) rows: the row count a template argument, so no load or
// multiply is spent on absent rows.
template <typename W, typename T, int kVec>
__device__ __forceinline__ void warp_dots_n(const W* u, const float* scales,
                                            const T* const (&v)[kChunk], int rows, int64_t n,
                                            int lane, float (&out)[kChunk]) {
  switch (rows) {
    case 1:
      warp_dots<W, T, kVec, 1>(u, scales, v, n, lane, out);
      break;
    case 2:
      warp_dots<W, T, kVec, 2>(u, scales, v, n, lane, out);
      break;
    case 3:
      warp_dots<W, T, kVec, 3>(u, scales, v, n, lane, out);
      break;
    default:
      warp_dots<W, T, kVec, kChunk>(u, scales, v, n, lane, out);
  }
}

// Block (run, y): warp w computes intermediate column y * kFusedMoeWarps + w for the run's picks.
template <typename T, typename W, int kVec, act::Kind K>
__global__ void __launch_bounds__(kFusedMoeWarps * 32)
    moe_up_experts_kernel(const __grid_constant__ MoeArgs a, const __grid_constant__ ExpertRuns r) {
  constexpr bool kGated = K != act::Kind::relu2;
  const int lane = threadIdx.x % 32;
  const int64_t i = int64_t{blockIdx.y} * kFusedMoeWarps + threadIdx.x / 32;
  if (i >= a.inter) return;
  const Run run = load_run(r);
  if (run.expert < 0 || run.count == 0) return;
  const int64_t e = run.expert, rows13 = kGated ? 2 * a.inter : a.inter;
  const W* w = static_cast<const W*>(a.w13) + (e * rows13 + i) * a.hidden;
  const float* gate_scales = scale_row<W>(a.w13_scale, e, i, a.r13_blocks, a.h_blocks);
  const float* up_scales = scale_row<W>(a.w13_scale, e, a.inter + i, a.r13_blocks, a.h_blocks);
  for (int c = 0; c < run.count; c += kChunk) {
    const T* x[kChunk];
#pragma unroll
    for (int q = 0; q < kChunk; ++q) {
      const int64_t entry = run.entry[c + q < run.count ? c + q : c];
      x[q] = static_cast<const T*>(a.x) + entry / a.k * a.x_stride;
    }
    const int rows = min(kChunk, run.count - c);
    float gate[kChunk], up[kChunk] = {};
    warp_dots_n<W, T, kVec>(w, gate_scales, x, rows, a.hidden, lane, gate);
    if constexpr (kGated) {
      warp_dots_n<W, T, kVec>(w + a.inter * a.hidden, up_scales, x, rows, a.hidden, lane, up);
    }
    if (lane < rows) {  // lane q stores pick q's value (registers indexed by a constant only)
#pragma unroll
      for (int q = 0; q < kChunk; ++q) {
        if (q == lane) {
          static_cast<T*>(a.act)[int64_t{run.entry[c + q]} * a.inter + i] =
              from_float<T>(act::forward<float>(K, gate[q], up[q]));
        }
      }
    }
  }
}

// Block (run, y): warp w computes column h = y * kFusedMoeWarps + w of each pick's down
// projection, scaled by the pick's routing weight, into partial (fp32).
template <typename T, typename W, int kVec>
__global__ void __launch_bounds__(kFusedMoeWarps * 32)
    moe_down_experts_kernel(const __grid_constant__ MoeArgs a,
                            const __grid_constant__ ExpertRuns r) {
  const int lane = threadIdx.x % 32;
  const int64_t h = int64_t{blockIdx.y} * kFusedMoeWarps + threadIdx.x / 32;
  if (h >= a.hidden) return;
  const Run run = load_run(r);
  if (run.expert < 0 || run.count == 0) return;
  const int64_t e = run.expert;
  const W* w = static_cast<const W*>(a.w2) + (e * a.hidden + h) * a.inter;
  const float* scales = scale_row<W>(a.w2_scale, e, h, a.h_blocks, a.i_blocks);
  for (int c = 0; c < run.count; c += kChunk) {
    const T* act[kChunk];
#pragma unroll
    for (int q = 0; q < kChunk; ++q) {
      act[q] = static_cast<const T*>(a.act) +
               int64_t{run.entry[c + q < run.count ? c + q : c]} * a.inter;
    }
    const int rows = min(kChunk, run.count - c);
    float dot[kChunk];
    warp_dots_n<W, T, kVec>(w, scales, act, rows, a.inter, lane, dot);
    if (lane < rows) {
#pragma unroll
      for (int q = 0; q < kChunk; ++q) {
        if (q == lane) {
          const int64_t entry = run.entry[c + q];
          const float weight = a.weights[entry / a.k * a.weights_stride + entry % a.k];
          r.partial[entry * a.hidden + h] = weight * dot[q];
        }
      }
    }
  }
}

// Thread (t, kW columns of H): the token's kept picks' partials, added in pick order.
template <typename T, int kW>
__global__ void __launch_bounds__(256)
    moe_combine_experts_kernel(const __grid_constant__ MoeArgs a, const float* partial) {
  const int64_t t = blockIdx.x, h = kW * (int64_t{blockIdx.y} * 256 + threadIdx.x);
  if (h >= a.hidden) return;
  float sum[kW] = {};
  for (int64_t j = 0; j < a.k; ++j) {
    if (local_expert(a, t, j) < 0) continue;  // dropped or bad: align counted it, never written
    const float* p = partial + (t * a.k + j) * a.hidden + h;
#pragma unroll
    for (int m = 0; m < kW; ++m) sum[m] += p[m];
  }
  store_floats<T, kW>(static_cast<T*>(a.out) + t * a.out_stride + h, sum);
}

}  // namespace

bool fused_moe_experts_fits(const MoeProblem& p) {
  return p.inter > 0 && p.local_experts <= kMoeAlignMaxLocalExperts && p.tokens * p.k > 0;
}

bool fused_moe_experts_mma_fits(const MoeProblem& p, bool up_vec, bool down_vec) {
  return p.fp8_weights() && up_vec && down_vec && p.hidden % 64 == 0 && p.inter % 64 == 0;
}

std::string fused_moe_experts(const MoeProblem& p, MoeArgs a, const FusedMoeGrid& g, bool up_vec,
                              bool down_vec, Stream stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t entries = p.tokens * p.k, elem = static_cast<int64_t>(dtype_size(p.dtype));
  const int64_t capacity = moe_align_capacity(p.tokens, p.k, p.local_experts, kExpertRun);
  const int64_t runs = capacity / kExpertRun;
  if (runs > kGridMaxX) {
    throw Error(p.op + ": " + std::to_string(runs) + " expert runs, over CUDA's grid limit");
  }
  // One scratch allocation carved in 256-byte aligned pieces.
  auto round = [](int64_t bytes) { return (bytes + 255) / 256 * 256; };
  const int64_t act_at = 0, partial_at = act_at + round(entries * p.inter * elem),
                sorted_at = partial_at + round(entries * p.hidden * 4),
                expert_at = sorted_at + round(capacity * 4),
                post_pad_at = expert_at + round(runs * 4), total = post_pad_at + 256;
  char* base = nullptr;
  KILN_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&base), static_cast<size_t>(total), s));
  a.act = base + act_at;
  const ExpertRuns r{reinterpret_cast<const int32_t*>(base + sorted_at),
                     reinterpret_cast<const int32_t*>(base + expert_at),
                     reinterpret_cast<const int32_t*>(base + post_pad_at),
                     reinterpret_cast<float*>(base + partial_at), entries};
  // The MMA kernels' blocks cover 8 columns, as the FMA kernels' 8 warps do: the same grid.
  static_assert(kMmaRows == kFusedMoeWarps);
  const bool mma = fused_moe_experts_mma_fits(p, up_vec, down_vec);
  const bool combine_vec = p.hidden % 8 == 0 && p.out.row_stride % 8 == 0 && aligned16(p.out.data);
  try {
    moe_align(
        fused_moe_align_args(p, kExpertRun, capacity, reinterpret_cast<int32_t*>(base + sorted_at),
                             reinterpret_cast<int32_t*>(base + expert_at),
                             reinterpret_cast<int32_t*>(base + post_pad_at)),
        stream);
    dispatch_value<DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
      using T = typename CudaType<decltype(dt)::value>::type;
      dispatch_bool(p.fp8_weights(), [&](auto fp8) {
        using W = std::conditional_t<decltype(fp8)::value, uint8_t, T>;
        constexpr int kVec = 16 / sizeof(W);
        const dim3 block(kFusedMoeWarps * 32);
        const dim3 up_grid(static_cast<unsigned>(runs), static_cast<unsigned>(g.up_y));
        const dim3 down_grid(static_cast<unsigned>(runs), static_cast<unsigned>(g.down_y));
        dispatch_value<act::Kind::swiglu, act::Kind::gelu_tanh, act::Kind::gelu_erf,
                       act::Kind::relu2>(p.act_kind(), "fused_moe activation", [&](auto k) {
          constexpr act::Kind K = decltype(k)::value;
          if constexpr (decltype(fp8)::value) {
            if (mma) {
              moe_up_experts_mma_kernel<T, K><<<up_grid, block, 0, s>>>(a, r);
              return;
            }
          }
          dispatch_bool(up_vec, [&](auto vec) {
            constexpr int kV = decltype(vec)::value ? kVec : 1;
            moe_up_experts_kernel<T, W, kV, K><<<up_grid, block, 0, s>>>(a, r);
          });
        });
        KILN_CUDA_CHECK(cudaGetLastError());
        [&] {
          if constexpr (decltype(fp8)::value) {
            if (mma) {
              moe_down_experts_mma_kernel<T><<<down_grid, block, 0, s>>>(a, r);
              return;
            }
          }
          dispatch_bool(down_vec, [&](auto vec) {
            constexpr int kV = decltype(vec)::value ? kVec : 1;
            moe_down_experts_kernel<T, W, kV><<<down_grid, block, 0, s>>>(a, r);
          });
        }();
        KILN_CUDA_CHECK(cudaGetLastError());
        dispatch_bool(combine_vec, [&](auto vec) {
          constexpr int kW = decltype(vec)::value ? 8 : 1;
          const dim3 grid(static_cast<unsigned>(p.tokens),
                          static_cast<unsigned>(ceil_div(p.hidden, int64_t{kW} * 256)));
          moe_combine_experts_kernel<T, kW><<<grid, 256, 0, s>>>(a, r.partial);
        });
        KILN_CUDA_CHECK(cudaGetLastError());
      });
    });
  } catch (...) {
    cudaFreeAsync(base, s);  // the launch error is the one to report
    throw;
  }
  KILN_CUDA_CHECK(cudaFreeAsync(base, s));
  return "fused_moe_gemv<" + std::string(dtype_name(p.dtype)) + (p.fp8_weights() ? ",w8" : "") +
         ",by_expert" + std::to_string(kExpertRun) + (mma ? ",mma" : "") + "," +
         act::kind_name(p.act_kind()) + (up_vec ? ",up_vec" : ",up_scalar") +
         (down_vec ? ",down_vec" : ",down_scalar") + ">";
}

}  // namespace kiln::cuda
