// fused_moe's decode path (the prefill path is fused_moe_grouped.cu, on the wgmma grouped GEMM).
// Two memory-bound GEMV-style kernels with a warp per output and fp32 accumulation:
//   up:   act[t * k + j, i] = act(w13[e] x[t])[i], rounded to x's dtype (the contract's rounding
//         point), into a [T * k, I] scratch allocated on the stream;
//   down: out[t, h] = sum_j topk_weights[t, j] * (w2[e][h] · act[t * k + j]), picks added in
//         order j = 0 .. k-1, so the result is the same run to run.
// A warp's dot product: lanes take 16-byte packs in turn (a warp reads 512 contiguous bytes a
// step) when the row length and alignment allow, single elements otherwise.
// Ids and map values live on the device, so they are not checked on the host: a pick whose id is
// outside [0, E) or whose map value is outside [-1, E_local) is skipped like a dropped pick (never
// dereferenced, contributes 0) and counted once into bad_ids, by the down kernel's first block of
// the token.
// FP8 weights (w8a16): the same kernels read e4m3 weights, 16 a lane a step, convert them
// exactly and scale each pack's partial dot product by its 128 x 128 block's scale; they halve
// the bytes of the decode path. From kExpertsMmaMinEntries picks on, FP8 weights go to the
// by-expert MMA kernels instead where the shape allows (fused_moe_experts.cu, expert_mma.cuh).
// Napkin math, decode (T = 1, k = 8, H = 4096, I = 1536, swiglu, bf16): the 8 picked experts'
// weights, 8 * (2 * 1536 + 1536) * 4096 * 2 B = 302 MB, read once: ~95 us at 3.2 TB/s if the
// warps keep the memory busy. At large T every pick re-reads its expert's rows (from L2 at best):
// that is what the grouped path is for (and fused_moe_experts.cu's by-expert kernels).
// KILN_FUSED_MOE=gemv, =gemv_experts or =grouped forces one path (an A/B switch; forcing a path
// that cannot take the problem is an error, not a fallback).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>

#include "core/dispatch.h"
#include "cuda/common/aligned.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/moe/fused_moe_launch.h"
#include "cuda/moe/moe_align_launch.h"
#include "cuda/moe/moe_gemv.cuh"
#include "ops/activation_math.h"

namespace kiln::cuda {
namespace {

using namespace moe_gemv;

// A warp per intermediate value: block (x, y) = pick x, columns y * kFusedMoeWarps + warp.
template <typename T, typename W, int kVec, act::Kind K>
__global__ void __launch_bounds__(kFusedMoeWarps * 32)
    moe_up_kernel(const __grid_constant__ MoeArgs a) {
  constexpr bool kGated = K != act::Kind::relu2;
  const int lane = threadIdx.x % 32;
  const int64_t row = blockIdx.x;  // the pick (t, j) = (row / k, row % k)
  const int64_t i = int64_t{blockIdx.y} * kFusedMoeWarps + threadIdx.x / 32;
  if (i >= a.inter) return;  // the same for the whole warp, as is the skip below
  const int64_t t = row / a.k, e = local_expert(a, t, row % a.k);
  if (e < 0) return;  // the down kernel skips this pick too, so its act row is never read
  const T* x = static_cast<const T*>(a.x) + t * a.x_stride;
  const int64_t rows13 = kGated ? 2 * a.inter : a.inter;
  const W* w = static_cast<const W*>(a.w13) + (e * rows13 + i) * a.hidden;
  const float gate = warp_dot<W, T, kVec>(
      w, scale_row<W>(a.w13_scale, e, i, a.r13_blocks, a.h_blocks), x, a.hidden, lane);
  const float up = kGated ? warp_dot<W, T, kVec>(
                                w + a.inter * a.hidden,
                                scale_row<W>(a.w13_scale, e, a.inter + i, a.r13_blocks, a.h_blocks),
                                x, a.hidden, lane)
                          : 0.f;
  if (lane == 0) {
    static_cast<T*>(a.act)[row * a.inter + i] = from_float<T>(act::forward<float>(K, gate, up));
  }
}

// A warp per element of out: block (x, y) = token x, columns y * kFusedMoeWarps + warp.
template <typename T, typename W, int kVec>
__global__ void __launch_bounds__(kFusedMoeWarps * 32)
    moe_down_kernel(const __grid_constant__ MoeArgs a) {
  const int lane = threadIdx.x % 32;
  const int64_t t = blockIdx.x;
  const int64_t h = int64_t{blockIdx.y} * kFusedMoeWarps + threadIdx.x / 32;
  if (h >= a.hidden) return;
  // Each bad pick is counted once: by lane 0 of the first warp of the token's first block.
  const bool counts = blockIdx.y == 0 && threadIdx.x == 0;
  float sum = 0.f;
  for (int64_t j = 0; j < a.k; ++j) {  // in order: the same sum run to run
    bool bad = false;
    const int64_t e = local_expert(a, t, j, &bad);
    if (bad && counts) atomicAdd(a.bad_ids, 1);
    if (e < 0) continue;
    const W* w = static_cast<const W*>(a.w2) + (e * a.hidden + h) * a.inter;
    const float* scales = scale_row<W>(a.w2_scale, e, h, a.h_blocks, a.i_blocks);
    const T* act = static_cast<const T*>(a.act) + (t * a.k + j) * a.inter;
    sum = fmaf(a.weights[t * a.weights_stride + j],
               warp_dot<W, T, kVec>(w, scales, act, a.inter, lane), sum);
  }
  if (lane == 0) static_cast<T*>(a.out)[t * a.out_stride + h] = from_float<T>(sum);
}

// Runs both kernels with `act` as the scratch; W is T, or uint8_t for e4m3 weights.
template <typename T, typename W>
void launch(const MoeArgs& a, const FusedMoeGrid& g, act::Kind kind, bool up_vec, bool down_vec,
            cudaStream_t s) {
  constexpr int kVec = 16 / sizeof(W);  // a 16-byte access of weights
  const dim3 block(kFusedMoeWarps * 32);
  if (g.up_y > 0) {  // I = 0: nothing to compute, and the down kernel's dots are empty
    const dim3 grid(static_cast<unsigned>(g.up_x), static_cast<unsigned>(g.up_y));
    dispatch_value<act::Kind::swiglu, act::Kind::gelu_tanh, act::Kind::gelu_erf, act::Kind::relu2>(
        kind, "fused_moe activation", [&](auto k) {
          dispatch_bool(up_vec, [&](auto vec) {
            constexpr int kV = decltype(vec)::value ? kVec : 1;
            moe_up_kernel<T, W, kV, decltype(k)::value><<<grid, block, 0, s>>>(a);
          });
        });
    KILN_CUDA_CHECK(cudaGetLastError());
  }
  const dim3 grid(static_cast<unsigned>(g.down_x), static_cast<unsigned>(g.down_y));
  dispatch_bool(down_vec, [&](auto vec) {
    constexpr int kV = decltype(vec)::value ? kVec : 1;
    moe_down_kernel<T, W, kV><<<grid, block, 0, s>>>(a);
  });
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

std::string fused_moe(const MoeProblem& p, Stream stream) {
  if (p.tokens == 0 || p.hidden == 0) return "empty";
  const char* pick = std::getenv("KILN_FUSED_MOE");
  const std::string_view forced = pick != nullptr ? pick : "";
  if (!forced.empty() && forced != "gemv" && forced != "gemv_experts" && forced != "grouped") {
    throw Error(p.op + ": KILN_FUSED_MOE must be gemv, gemv_experts or grouped, got '" +
                std::string(forced) + "'");
  }
  const bool gemv_forced = forced == "gemv" || forced == "gemv_experts";
  const bool grouped_fits = p.inter > 0 && fused_moe_grouped_fits(p);
  if (p.fp8_activations) {  // w8a8: the FP8 grouped GEMMs at every T, or an error
    if (gemv_forced || !grouped_fits) {
      throw Error(p.op + ": w8a8 (fp8_activations) runs on the FP8 grouped GEMM path only, which " +
                  (gemv_forced ? "KILN_FUSED_MOE=" + std::string(forced) + " forbids"
                               : std::string("does not take this problem (it needs a Hopper "
                                             "GPU, I > 0, H and I multiples of 16, I a "
                                             "multiple of 64 when gated, 16-byte aligned "
                                             "weights)")));
    }
    return fused_moe_grouped(p, stream);
  }
  if (forced == "grouped") {
    if (!grouped_fits) {
      throw Error(p.op +
                  ": KILN_FUSED_MOE=grouped, but the grouped GEMM path does not take this problem "
                  "(it needs bf16/f16 weights or w8a8, a Hopper GPU, I > 0, H a multiple of 8, I a "
                  "multiple of 64 when gated and 16-byte aligned weights)");
    }
    return fused_moe_grouped(p, stream);
  }
  if (!gemv_forced && grouped_fits && p.tokens * p.k >= kGroupedMinEntries) {
    return fused_moe_grouped(p, stream);
  }
  if (forced == "gemv_experts" && !fused_moe_experts_fits(p)) {
    throw Error(p.op +
                ": KILN_FUSED_MOE=gemv_experts, but the by-expert GEMV kernels do not take "
                "this problem (they need I > 0 and at most " +
                std::to_string(kMoeAlignMaxLocalExperts) + " local experts)");
  }
  const FusedMoeGrid g = fused_moe_grid(p);
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t elem = static_cast<int64_t>(dtype_size(p.dtype)), vec = 16 / elem;
  MoeArgs a{p.x.data,
            p.x.row_stride,
            p.w13,
            p.w2,
            static_cast<const float*>(p.weights.data),
            p.weights.row_stride,
            static_cast<const int32_t*>(p.ids.data),
            p.ids.row_stride,
            p.expert_map,
            nullptr,
            p.out.data,
            p.out.row_stride,
            p.bad_ids,
            p.hidden,
            p.inter,
            p.k,
            p.experts,
            p.local_experts,
            p.w13_scale,
            p.w2_scale,
            p.scale_blocks(p.rows13()),
            p.scale_blocks(p.hidden),
            p.scale_blocks(p.inter)};
  // 16-byte packs of weights (8 bf16/f16 elements, 16 FP8 ones; x and the scratch read as many
  // elements, 16 or 32 bytes): whole packs per row, every row start 16-byte aligned (the scratch
  // is, from cudaMallocAsync, and its rows are I elements apart).
  const int64_t wvec = p.fp8_weights() ? 16 : vec;
  const bool up_vec =
      p.hidden % wvec == 0 && p.x.row_stride % vec == 0 && aligned16(p.x.data) && aligned16(p.w13);
  const bool down_vec = p.inter % wvec == 0 && aligned16(p.w2);
  // The by-expert kernels: forced, or with e4m3 weights on tensor cores from
  // kExpertsMmaMinEntries picks on (moe_gemv.cuh). The FMA by-expert kernels only when forced: on
  // the H100 (b3900df, DeepSeek-V3 shapes, e4m3 weights) they ran T = 64 in 5.74 ms against the
  // per-pick kernels' 5.89 and T = 16 in 2.12 against 1.73.
  const bool by_expert_mma = forced.empty() && p.tokens * p.k >= kExpertsMmaMinEntries &&
                             fused_moe_experts_fits(p) &&
                             fused_moe_experts_mma_fits(p, up_vec, down_vec);
  if (forced == "gemv_experts" || by_expert_mma) {
    return fused_moe_experts(p, a, g, up_vec, down_vec, stream);
  }
  // Stream-ordered scratch: no sync, and capturable in a CUDA graph.
  const size_t bytes = static_cast<size_t>(p.tokens * p.k * p.inter * elem);
  void* scratch = nullptr;
  KILN_CUDA_CHECK(cudaMallocAsync(&scratch, bytes > 0 ? bytes : 16, s));
  a.act = scratch;
  try {
    dispatch_value<DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
      using T = typename CudaType<decltype(dt)::value>::type;
      dispatch_bool(p.fp8_weights(), [&](auto fp8) {
        using W = std::conditional_t<decltype(fp8)::value, uint8_t, T>;
        launch<T, W>(a, g, p.act_kind(), up_vec, down_vec, s);
      });
    });
  } catch (...) {
    cudaFreeAsync(scratch, s);  // the launch error is the one to report
    throw;
  }
  KILN_CUDA_CHECK(cudaFreeAsync(scratch, s));
  return "fused_moe_gemv<" + std::string(dtype_name(p.dtype)) + (p.fp8_weights() ? ",w8" : "") +
         "," + act::kind_name(p.act_kind()) + (up_vec ? ",up_vec" : ",up_scalar") +
         (down_vec ? ",down_vec" : ",down_scalar") + ">";
}

}  // namespace kiln::cuda
