// topk: a warp a row. Lane l holds scores l, l + 32, ... in registers (kPerLane of them, E <= 32
// kPerLane); k rounds each pick the warp's best remaining (value, index) by a shuffle argmax in
// topk_before's order (NaN first, then larger, then the lower index), and lane r keeps pick r, so
// the k results are written by k lanes at once. Softmax over the picks: one warp reduction.
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/topk/topk_launch.h"

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

__device__ __forceinline__ bool before(float a, int ia, float b, int ib) {
  const bool na = a != a, nb = b != b;
  if (na != nb) return na;
  if (!na && a != b) return a > b;
  return ia < ib;
}

template <typename T, typename V, int kPerLane>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    topk_kernel(const __grid_constant__ TopkArgs a) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= a.rows) return;
  const T* in = static_cast<const T*>(a.scores) + row * a.scores_stride;
  float v[kPerLane];
  uint32_t taken = 0;  // bit m: score lane + 32 m already picked (or past E)
#pragma unroll
  for (int m = 0; m < kPerLane; ++m) {
    const int e = lane + 32 * m;
    v[m] = e < a.experts ? to_float(in[e]) : 0.f;
    if (e >= a.experts) taken |= 1u << m;
  }
  float mine_value = 0.f;
  int mine_index = 0;
  for (int r = 0; r < a.k; ++r) {
    // This lane's best remaining candidate.
    float best = 0.f;
    int best_index = -1;
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) {
      if (taken & (1u << m)) continue;
      const int e = lane + 32 * m;
      if (best_index < 0 || before(v[m], e, best, best_index)) {
        best = v[m];
        best_index = e;
      }
    }
    // The warp's best: a butterfly, so every lane ends with the same winner.
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float other = __shfl_xor_sync(~0u, best, o);
      const int other_index = __shfl_xor_sync(~0u, best_index, o);
      if (other_index >= 0 && (best_index < 0 || before(other, other_index, best, best_index))) {
        best = other;
        best_index = other_index;
      }
    }
    if (best_index % 32 == lane) taken |= 1u << (best_index / 32);
    if (lane == r) {
      mine_value = best;
      mine_index = best_index;
    }
  }
  if (a.softmax) {
    const float top = __shfl_sync(~0u, mine_value, 0);  // pick 0 is the largest
    const float p = lane < a.k ? __expf(mine_value - top) : 0.f;
    float sum = p;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(~0u, sum, o);
    mine_value = p / sum;
  }
  if (lane < a.k) {
    static_cast<V*>(a.values)[row * a.values_stride + lane] = from_float<V>(mine_value);
    a.indices[row * a.indices_stride + lane] = mine_index;
  }
}

}  // namespace

std::string topk(const TopkProblem& p, Stream stream) {
  if (p.rows == 0) return "empty";
  const int per_lane = static_cast<int>((p.experts + 31) / 32);
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
  int instance = 1;
  while (instance < per_lane) instance *= 2;
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
