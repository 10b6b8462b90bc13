#pragma once
// Warp-wide reductions by butterfly shuffles: every lane ends with the result, and the order of
// the additions is fixed, so a sum is the same run to run. Also the warp's inclusive prefix sum.

namespace kiln::cuda {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
  return v;
}

// Lane l gets the sum of lanes 0..l's v (Hillis-Steele: five shuffles up); `lane` is the
// caller's lane index (threadIdx.x % 32).
__device__ __forceinline__ int warp_inclusive_sum(int v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int other = __shfl_up_sync(~0u, v, o);
    if (lane >= o) v += other;
  }
  return v;
}

}  // namespace kiln::cuda
