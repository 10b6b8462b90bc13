#pragma once
// One router row as a warp's device function: the routers' kernel (router.cu) runs it a warp a
// row, and the dense router's fused kernel (dense_router.cu) runs it in its last block on the
// logits it has just computed. See router.cu for the method.
#include <cmath>
#include <cstdint>

#include "cuda/common/elements.cuh"
#include "cuda/common/fast_math.cuh"
#include "cuda/common/warp_reduce.cuh"
#include "cuda/topk/warp_topk.cuh"
#include "kiln/ops/router.h"
#include "ops/router_problem.h"

namespace kiln::cuda {

struct RouterArgs {
  const void* logits;
  const float* bias;
  float* weights;
  int32_t* ids;
  int64_t rows, logits_stride, weights_stride, ids_stride;
  int experts, k, n_group, topk_group;
  int group_lanes;          // lanes a group's top two is shared over: a power of two
  int per;                  // experts a group
  uint32_t per_reciprocal;  // ceil(2^32 / per) for per >= 2: e / per = umulhi(e, it) for e < 1024
  bool renormalize;
  float scale;
};

// The kernel arguments of a validated problem.
inline RouterArgs router_args(const RouterProblem& p) {
  const int per = static_cast<int>(p.experts / p.n_group);
  int group_lanes = 1;
  while (2 * group_lanes * p.n_group <= 32) group_lanes *= 2;
  return RouterArgs{p.logits.data,
                    p.bias,
                    static_cast<float*>(p.weights.data),
                    static_cast<int32_t*>(p.ids.data),
                    p.rows,
                    p.logits.row_stride,
                    p.weights.row_stride,
                    p.ids.row_stride,
                    static_cast<int>(p.experts),
                    static_cast<int>(p.k),
                    static_cast<int>(p.n_group),
                    static_cast<int>(p.topk_group),
                    group_lanes,
                    per,
                    per >= 2 ? static_cast<uint32_t>(((uint64_t{1} << 32) + per - 1) / per) : 0u,
                    p.renormalize,
                    static_cast<float>(p.scale)};
}

// Candidates a lane holds: a power of two with 32 of them covering E.
inline int router_per_lane(int64_t experts) {
  int per_lane = 1;
  while (32 * per_lane < experts) per_lane *= 2;
  return per_lane;
}

// DeepSeek-V3's group filter: zeroes the keys of the candidates in groups not kept. A group's
// score is the sum of its two best selections (its best when it has one expert); groups are
// ranked in topk order (lower group first on ties).
template <Layout L, int kPerLane>
__device__ __forceinline__ void drop_groups(uint32_t (&key)[kPerLane], const RouterArgs& a,
                                            uint32_t* row_key) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const int e = candidate_index<L, kPerLane>(lane, m);
    if (e < a.experts) row_key[e] = key[m];
  }
  __syncwarp();
  const int group = lane / a.group_lanes, part = lane % a.group_lanes;
  uint32_t first = 0, second = 0;  // the top two keys as a multiset (0 = none yet)
  if (group < a.n_group) {
    for (int e = group * a.per + part; e < (group + 1) * a.per; e += a.group_lanes) {
      const uint32_t x = row_key[e];
      second = max(second, min(first, x));
      first = max(first, x);
    }
  }
  for (int o = 1; o < a.group_lanes; o *= 2) {  // stays inside the group's aligned lanes
    const uint32_t other_first = __shfl_xor_sync(~0u, first, o);
    const uint32_t other_second = __shfl_xor_sync(~0u, second, o);
    second = max(max(second, other_second), min(first, other_first));
    first = max(first, other_first);
  }
  __syncwarp();  // row_key is rewritten by this warp's next row
  const float score = a.per >= 2 ? topk_value(first) + topk_value(second) : topk_value(first);
  uint32_t group_key = group < a.n_group && part == 0 ? topk_key(score) : 0u;
  uint32_t keep = 0;  // bit g: group g kept
  for (int r = 0; r < a.topk_group; ++r) {
    const uint32_t best = __reduce_max_sync(~0u, group_key);
    const uint32_t g =
        __reduce_min_sync(~0u, group_key == best ? static_cast<uint32_t>(group) : ~0u);
    keep |= 1u << g;
    if (static_cast<uint32_t>(group) == g) group_key = 0;
  }
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const auto e = static_cast<uint32_t>(candidate_index<L, kPerLane>(lane, m));
    const uint32_t g = a.per == 1 ? e : __umulhi(e, a.per_reciprocal);
    if (g < 32 && !(keep & (1u << g))) key[m] = 0;  // g >= 32: past E, already 0
  }
}

// log(1 + t) for t in [0, 1] as 2 atanh(z), z = t / (2 + t) <= 1/3, by its odd series to z^13
// (the first term left out is below 2^-26 of the sum): six FMAs and one approximate reciprocal
// where log1pf takes a branchy library call per candidate.
__device__ __forceinline__ float log1p_unit(float t) {
  const float z = t * fast_rcp(2.f + t), z2 = z * z;
  float p = 1.f / 13;
  p = fmaf(p, z2, 1.f / 11);
  p = fmaf(p, z2, 1.f / 9);
  p = fmaf(p, z2, 1.f / 7);
  p = fmaf(p, z2, 1.f / 5);
  p = fmaf(p, z2, 1.f / 3);
  p = fmaf(p, z2, 1.f);
  return 2.f * z * p;
}

// MegaMoE's activation score sqrt(softplus(x)), softplus(x) = max(x, 0) + log1p(e^-|x|). Below
// x = -16, softplus(x) = e^x to fp32 rounding, so the score is e^(x/2): no flush to 0 until
// x < -174.
__device__ __forceinline__ float activation_score(float x) {
  const float softplus = fmaxf(x, 0.f) + log1p_unit(fast_exp(-fabsf(x)));
  return x < -16.f ? fast_exp(0.5f * x) : fast_sqrt(softplus);
}

// Routes row `row` of logits `in` (E values of T): writes its k weights and ids. The whole warp
// calls it; row_key (32 * kPerLane keys, DeepSeek-V3 only) and slots (kTopkSlots)
// are this warp's shared scratch.
// Softmax selects on the logits: softmax is monotone, so the float64 reference's order is the
// logits' order (fp32 probabilities could round two of them to a tie the reference does not
// have). The payload is the logit itself, so the selection waits on no arithmetic; e^(x - max)
// is taken after it and divided once per pick by its sum (all of them, or the picks' when
// renormalising).
template <typename T, int kPerLane, RouterKind kKind, Layout L>
__device__ __forceinline__ void route_row(const RouterArgs& a, const T* in, int64_t row,
                                          uint32_t* row_key, TopkSlot* slots) {
  const int lane = threadIdx.x % 32;
  float score[kPerLane];
  load_candidates<T, L, kPerLane>(in, a.experts, -INFINITY, score);
  // Whether slot m is an expert (recomputed where needed: an array of it spilled at 32 a lane).
  // The run layout holds exactly E = 32 kPerLane.
  auto valid = [&](int m) {
    return L == Layout::run || candidate_index<L, kPerLane>(lane, m) < a.experts;
  };
  uint32_t key[kPerLane];
  bool nan_row = false;  // softmax: every probability NaN
  float top = 0.f;       // softmax: the largest logit
  if constexpr (kKind == RouterKind::softmax) {
    float lane_top = -INFINITY;  // fmaxf passes over NaN logits, as the reference's max does
    bool poison = false, live = false;
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) {
      const float x = score[m];
      key[m] = valid(m) ? topk_key(x) : 0u;
      lane_top = fmaxf(lane_top, x);
      poison |= valid(m) && (x != x || x == INFINITY);
      live |= valid(m) && x != -INFINITY;
    }
    // A NaN or +inf logit, or all of them -inf, makes the reference's max-shifted sum, hence
    // every probability, NaN: all experts tie at the top, the lowest indices win and every weight
    // is NaN.
    nan_row = __any_sync(~0u, poison) || !__any_sync(~0u, live);
    if (nan_row) {
#pragma unroll
      for (int m = 0; m < kPerLane; ++m) key[m] = valid(m) ? ~0u : 0u;
    }
    top = topk_value(__reduce_max_sync(~0u, topk_key(lane_top)));
  } else {
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) {
      const float x = score[m];
      if constexpr (kKind == RouterKind::deepseek_v3) {
        score[m] = fast_rcp(1.f + fast_exp(-x));
      } else {
        score[m] = activation_score(x);
      }
      const int e = candidate_index<L, kPerLane>(lane, m);
      const float sel = score[m] + (a.bias && valid(m) ? a.bias[e] : 0.f);
      key[m] = valid(m) ? topk_key(sel) : 0u;
    }
  }
  if constexpr (kKind == RouterKind::deepseek_v3) drop_groups<L, kPerLane>(key, a, row_key);
  const Pick mine = warp_topk<L, kPerLane>(key, score, a.k, slots);
  const bool picked = mine.rank < a.k;
  float value = mine.payload, norm = 0.f;
  if constexpr (kKind == RouterKind::softmax) {
    value = nan_row ? __int_as_float(0x7fffffff) : fast_exp(mine.payload - top);
    if (a.renormalize) {
      norm = warp_sum(picked ? value : 0.f);
    } else {
      float sum = 0.f;
#pragma unroll
      for (int m = 0; m < kPerLane; ++m) sum += valid(m) ? fast_exp(score[m] - top) : 0.f;
      norm = warp_sum(sum);
    }
  } else {
    norm = warp_sum(picked ? value : 0.f);
  }
  if (picked) {
    const float scale = kKind == RouterKind::deepseek_v3 ? a.scale : 1.f;
    a.weights[row * a.weights_stride + mine.rank] = value / norm * scale;
    a.ids[row * a.ids_stride + mine.rank] = mine.index;
  }
}

}  // namespace kiln::cuda
