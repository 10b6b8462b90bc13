// topk: a warp a row (warp_topk.cuh): lane l holds scores l, l + 32, ... in registers, k shuffle
// argmax rounds, lane r keeps pick r, so the k results are written by k lanes at once. Softmax
// over the picks: one warp reduction.
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
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

template <typename T, typename V, int kPerLane>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    topk_kernel(const __grid_constant__ TopkArgs a) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= a.rows) return;
  const T* in = static_cast<const T*>(a.scores) + row * a.scores_stride;
  float v[kPerLane];
  uint32_t taken = 0;  // scores past E are never candidates
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const int e = lane + 32 * m;
    v[m] = e < a.experts ? to_float(in[e]) : 0.f;
    if (e >= a.experts) taken |= 1u << m;
  }
  const Pick mine = warp_topk<kPerLane>(v, v, taken, a.k);
  float value = mine.key;
  if (a.softmax) {
    const float top = __shfl_sync(~0u, mine.key, 0);  // pick 0 is the largest
    const float p = lane < a.k ? __expf(mine.key - top) : 0.f;
    value = p / warp_sum(p);
  }
  if (lane < a.k) {
    static_cast<V*>(a.values)[row * a.values_stride + lane] = from_float<V>(value);
    a.indices[row * a.indices_stride + lane] = mine.index;
  }
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
  const auto blocks = static_cast<unsigned>((p.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
  int instance = 1;  // scores a lane holds: a power of two >= E / 32
  while (32 * instance < p.experts) instance *= 2;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.values_dtype == DType::f32, [&](auto vf) {
      using V = std::conditional_t<decltype(vf)::value, float, T>;
      dispatch_value<1, 2, 4, 8, 16, 32>(instance, "topk scores per lane", [&](auto n) {
        topk_kernel<T, V, decltype(n)::value><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(args);
        KILN_CUDA_CHECK(cudaGetLastError());
      });
    });
  });
  return "topk_warp_row<" + std::string(dtype_name(p.dtype)) + ",per_lane" +
         std::to_string(instance) + (p.softmax ? ",softmax" : "") + ">";
}

}  // namespace kiln::cuda
