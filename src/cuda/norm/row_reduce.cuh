#pragma once
// Sums over the threads of one row: a warp butterfly, then (for rows wider than a warp) one
// shared slot per warp, which lane l of every warp reads for warp l % warps before a second
// butterfly across those lanes. A butterfly is symmetric (each step adds the same two values in
// either lane), so every thread of the row gets the same bits, and the same bits every run.
// Measured on the H100 (ncu): the norm kernels issue an instruction on ~80% of scheduler cycles,
// so the cross-warp step costs log2(warps) shuffles a value, not `warps` shared loads and adds.
//
// Every thread of the block must call it (it holds __syncthreads). row_scratch is 16-byte aligned
// with kN floats a warp. kTrailingSync = false leaves out the barrier that lets the caller reuse
// row_scratch at once: callers that use it once, or alternate two areas row by row, skip it.
#include <type_traits>

namespace kiln::cuda {

template <int kN, bool kTrailingSync = true>
__device__ __forceinline__ void row_sum(float (&v)[kN], float* row_scratch /* [warps][kN] */) {
  static_assert(kN == 1 || kN == 2 || kN == 4, "row_sum: kN must be 1, 2 or 4");
  using Vec = std::conditional_t<kN == 4, float4, std::conditional_t<kN == 2, float2, float>>;
#pragma unroll
  for (int k = 0; k < kN; ++k) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v[k] += __shfl_xor_sync(~0u, v[k], offset);
  }
  const int warps_per_row = blockDim.x / 32;  // a power of two
  if (warps_per_row == 1) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    Vec part;
    float* p = reinterpret_cast<float*>(&part);
#pragma unroll
    for (int k = 0; k < kN; ++k) p[k] = v[k];
    reinterpret_cast<Vec*>(row_scratch)[warp] = part;
  }
  __syncthreads();
  const Vec part = reinterpret_cast<const Vec*>(row_scratch)[lane & (warps_per_row - 1)];
  const float* p = reinterpret_cast<const float*>(&part);
#pragma unroll
  for (int k = 0; k < kN; ++k) v[k] = p[k];
  for (int offset = warps_per_row / 2; offset > 0; offset >>= 1) {
#pragma unroll
    for (int k = 0; k < kN; ++k) v[k] += __shfl_xor_sync(~0u, v[k], offset);
  }
  if constexpr (kTrailingSync) __syncthreads();
}

__device__ __forceinline__ float row_sum(float v, float* row_scratch) {
  float a[1] = {v};
  row_sum(a, row_scratch);
  return a[0];
}

}  // namespace kiln::cuda
