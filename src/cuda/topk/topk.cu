// topk: a warp a row (warp_topk.cuh), blocks of up to 8 warps (fewer for few rows:
// row_warps_per_block). A lane loads its candidates (coalesced vector loads in the run layout when
// E = 32 * per_lane and the rows are aligned, else strided loads), turns them into
// order-preserving keys, and warp_topk ranks the picks, so the k results are written by k lanes
// at once, each at its rank. Softmax over the picks: one warp reduction.
// Napkin math for [16384, 256] f32, k = 8: 16 MiB read, 1 MiB written, ~5 us at 3.3 TB/s. Per
// row (a warp) the s6 k-round butterfly issued ~1500 instructions (120 of them shuffles); the
// REDUX rounds of s6-s14 ~300. Measured on the H100: 18.3 us (s9), 18.4 us with the ranks of s15,
// which trade instructions (the threshold's 32 compares, the slot ranks) for a shorter chain
// (T = 64: 5.3-5.8 us, a one-element kernel 4.0).
#include <string>

#include "core/dispatch.h"
#include "core/int_math.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/elements.cuh"
#include "cuda/topk/topk_launch.h"
#include "cuda/topk/warp_topk.cuh"

namespace kiln::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

struct TopkArgs {
  const void* scores;
  void* values;
  int32_t* indices;
  int64_t rows, scores_stride, values_stride, indices_stride;
  int experts, k;
  bool softmax;
};

template <typename T, typename V, int kPerLane, Layout L>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    topk_kernel(const __grid_constant__ TopkArgs a) {
  __shared__ TopkSlot slots[kWarpsPerBlock][kTopkSlots];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;  // <= kWarpsPerBlock warps
  const int64_t row = int64_t{blockIdx.x} * (blockDim.x / 32) + warp;
  if (row >= a.rows) return;
  const T* in = static_cast<const T*>(a.scores) + row * a.scores_stride;
  float v[kPerLane];
  load_candidates<T, L, kPerLane>(in, a.experts, 0.f, v);
  uint32_t key[kPerLane];
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    key[m] = candidate_index<L, kPerLane>(lane, m) < a.experts ? topk_key(v[m]) : 0u;
  }
  const Pick mine = warp_topk<L, kPerLane>(key, v, a.k, slots[warp]);
  const bool picked = mine.rank < a.k;
  float value = mine.payload;  // the score itself (-0 and NaN bits as loaded)
  if (a.softmax) {
    // Pick 0 is the largest (or a NaN).
    const int first = __ffs(__ballot_sync(~0u, mine.rank == 0)) - 1;
    const float top = __shfl_sync(~0u, mine.payload, first);
    const float p = picked ? __expf(mine.payload - top) : 0.f;
    value = p / warp_sum(p);
  }
  if (picked) {
    static_cast<V*>(a.values)[row * a.values_stride + mine.rank] = from_float<V>(value);
    a.indices[row * a.indices_stride + mine.rank] = mine.index;
  }
}

template <typename T, typename V, int kPerLane, Layout L>
void launch(const TopkArgs& args, int warps, Stream stream) {
  const auto blocks = static_cast<unsigned>(ceil_div(args.rows, warps));
  topk_kernel<T, V, kPerLane, L><<<blocks, warps * 32, 0, stream>>>(args);
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

std::string topk(const TopkProblem& p, Stream stream) {
  if (p.rows == 0) return "empty";
  const TopkArgs args{p.scores.data,
                      p.values.data,
                      static_cast<int32_t*>(p.indices.data),
                      p.rows,
                      p.scores.row_stride,
                      p.values.row_stride,
                      p.indices.row_stride,
                      static_cast<int>(p.experts),
                      static_cast<int>(p.k),
                      p.softmax};
  const int warps = row_warps_per_block(p.rows, sm_count(p.device), kWarpsPerBlock);
  int per_lane = 1;  // scores a lane holds: a power of two >= E / 32
  while (32 * per_lane < p.experts) per_lane *= 2;
  const bool run = run_layout_fits(p.scores.data, p.scores.row_stride, p.experts, per_lane,
                                   static_cast<int>(dtype_size(p.dtype)));
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.values_dtype == DType::f32, [&](auto vf) {
      using V = std::conditional_t<decltype(vf)::value, float, T>;
      dispatch_value<1, 2, 4, 8, 16, 32>(per_lane, "topk scores per lane", [&](auto n) {
        constexpr int kN = decltype(n)::value;
        with_layout<T, kN>(run, [&](auto layout) {
          launch<T, V, kN, decltype(layout)::value>(args, warps, stream);
        });
      });
    });
  });
  return "topk_warp_row<" + std::string(dtype_name(p.dtype)) + ",per_lane" +
         std::to_string(per_lane) + (run ? ",run" : ",strided") + (p.softmax ? ",softmax" : "") +
         ">";
}

}  // namespace kiln::cuda
