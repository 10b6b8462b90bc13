// The routers, one launch from logits to (weights, ids): a warp a row (warp_topk.cuh). Each lane
// turns its logits into scores (softmax: two warp reductions; sigmoid; sqrt-softplus) and
// selections (+ bias), DeepSeek-V3's group filter masks the experts of the groups not kept, then k
// argmax rounds pick by selection carrying the unbiased score, and the k lanes holding picks
// normalise and store. NOT YET RUN ON A GPU.
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/topk/router_launch.h"
#include "cuda/topk/warp_topk.cuh"

namespace kiln::cuda {
namespace {

constexpr int kWarps = 8;

struct RouterArgs {
  const void* logits;
  const float* bias;
  float* weights;
  int32_t* ids;
  int64_t rows, logits_stride, weights_stride, ids_stride;
  int experts, k, n_group, topk_group;
  bool renormalize;
  float scale;
};

// DeepSeek-V3's group filter: bit m of the result set = candidate lane + 32 m is in a dropped
// group. A group's score is the sum of its two best selections; groups are ranked in topk order.
template <int kPerLane>
__device__ __forceinline__ uint32_t dropped_groups(const float (&sel)[kPerLane], uint32_t taken,
                                                   const RouterArgs& a, float* row_sel) {
  const int lane = threadIdx.x % 32, per = a.experts / a.n_group;
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    if (!(taken & (1u << m))) row_sel[lane + 32 * m] = sel[m];
  }
  __syncwarp();
  float group = 0.f;  // lane g scores group g (n_group <= 32)
  if (lane < a.n_group) {
    float first = -INFINITY, second = -INFINITY;
    int first_index = -1;
    for (int e = lane * per; e < (lane + 1) * per; ++e) {
      const float v = row_sel[e];
      if (first_index < 0 || topk_before(v, e, first, first_index)) {
        second = first;
        first = v;
        first_index = e;
      } else if (topk_before(v, e, second, -1) || second == -INFINITY) {
        second = v;
      }
    }
    group = per >= 2 ? first + second : first;
  }
  __syncwarp();
  const float key[1] = {group}, none[1] = {0.f};
  const uint32_t not_a_group = lane < a.n_group ? 0u : 1u;
  const Pick kept = warp_topk<1>(key, none, not_a_group, a.topk_group);
  uint32_t keep = 0;  // bit g: group g kept
  for (int r = 0; r < a.topk_group; ++r) keep |= 1u << __shfl_sync(~0u, kept.index, r);
  uint32_t dropped = 0;
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const int e = lane + 32 * m;
    if (e < a.experts && !(keep & (1u << (e / per)))) dropped |= 1u << m;
  }
  return dropped;
}

template <typename T, int kPerLane, RouterKind kKind>
__global__ void __launch_bounds__(kWarps * 32) router_kernel(const __grid_constant__ RouterArgs a) {
  __shared__ float row_sel[kKind == RouterKind::deepseek_v3 ? kWarps : 1][32 * kPerLane];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row = int64_t{blockIdx.x} * kWarps + warp;
  if (row >= a.rows) return;
  const T* in = static_cast<const T*>(a.logits) + row * a.logits_stride;
  float score[kPerLane], sel[kPerLane];
  uint32_t taken = 0;
  float top = -INFINITY;
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const int e = lane + 32 * m;
    score[m] = e < a.experts ? to_float(in[e]) : -INFINITY;
    if (e >= a.experts) taken |= 1u << m;
    top = fmaxf(top, score[m]);
  }
  if constexpr (kKind == RouterKind::softmax) {
    top = warp_max(top);
    float sum = 0.f;
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) {
      score[m] = (taken & (1u << m)) ? 0.f : __expf(score[m] - top);
      sum += score[m];
    }
    sum = warp_sum(sum);
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) sel[m] = score[m] = score[m] / sum;
  } else {
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) {
      const float x = score[m];
      if constexpr (kKind == RouterKind::deepseek_v3) {
        score[m] = 1.f / (1.f + __expf(-x));
      } else {
        score[m] = sqrtf(fmaxf(x, 0.f) + log1pf(__expf(-fabsf(x))));
      }
      const int e = lane + 32 * m;
      sel[m] = score[m] + (a.bias && e < a.experts ? a.bias[e] : 0.f);
    }
  }
  if constexpr (kKind == RouterKind::deepseek_v3)
    taken |= dropped_groups(sel, taken, a, row_sel[warp]);
  const Pick mine = warp_topk<kPerLane>(sel, score, taken, a.k);
  float norm = 1.f;
  if (kKind != RouterKind::softmax || a.renormalize) {
    norm = warp_sum(lane < a.k ? mine.payload : 0.f);
  }
  if (lane < a.k) {
    const float scale = kKind == RouterKind::deepseek_v3 ? a.scale : 1.f;
    a.weights[row * a.weights_stride + lane] = mine.payload / norm * scale;
    a.ids[row * a.ids_stride + lane] = mine.index;
  }
}

}  // namespace

std::string router(const RouterProblem& p, Stream stream) {
  if (p.rows == 0) return "empty";
  const RouterArgs args{p.logits.data,
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
                        p.renormalize,
                        static_cast<float>(p.scale)};
  int per_lane = 1;
  while (32 * per_lane < p.experts) per_lane *= 2;
  const auto blocks = static_cast<unsigned>((p.rows + kWarps - 1) / kWarps);
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_value<RouterKind::softmax, RouterKind::deepseek_v3, RouterKind::activation>(
        p.kind, "router kind", [&](auto kind) {
          dispatch_value<1, 2, 4, 8, 16, 32>(per_lane, "router experts per lane", [&](auto n) {
            router_kernel<T, decltype(n)::value, decltype(kind)::value>
                <<<blocks, kWarps * 32, 0, stream>>>(args);
            KILN_CUDA_CHECK(cudaGetLastError());
          });
        });
  });
  const char* kind = p.kind == RouterKind::softmax       ? "softmax"
                     : p.kind == RouterKind::deepseek_v3 ? "deepseek_v3"
                                                         : "activation";
  return std::string("router_warp_row<") + kind + "," + std::string(dtype_name(p.dtype)) +
         ",per_lane" + std::to_string(per_lane) + ">";
}

}  // namespace kiln::cuda
