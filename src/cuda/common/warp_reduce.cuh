#pragma once
// Warp-wide reductions by butterfly shuffles: every lane ends with the result, and the order of
// the additions is fixed, so a sum is the same run to run.

namespace kiln::cuda {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
  return v;
}

}  // namespace kiln::cuda
