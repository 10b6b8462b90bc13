#pragma once
// Sums over the threads of one row: a warp butterfly, then (for rows wider than a warp) one
// shared slot per warp read back in warp order, so every thread gets the same bits every run.
// Every thread of the block must call it (it may hold __syncthreads).

namespace kiln::cuda {

template <int kN>
__device__ __forceinline__ void row_sum(float (&v)[kN], float* row_scratch /* [warps][kN] */) {
#pragma unroll
  for (int k = 0; k < kN; ++k) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v[k] += __shfl_xor_sync(~0u, v[k], offset);
  }
  const int warps_per_row = blockDim.x / 32;
  if (warps_per_row == 1) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < kN; ++k) row_scratch[warp * kN + k] = v[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < kN; ++k) {
    float s = 0.f;
    for (int w = 0; w < warps_per_row; ++w) s += row_scratch[w * kN + k];
    v[k] = s;
  }
  __syncthreads();
}

__device__ __forceinline__ float row_sum(float v, float* row_scratch) {
  float a[1] = {v};
  row_sum(a, row_scratch);
  return a[0];
}

}  // namespace kiln::cuda
