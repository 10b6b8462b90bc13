#pragma once
// The warp-per-row top-k shared by topk and the routers: lane l holds candidates l, l + 32, ...
// (kPerLane of them); k rounds each pick the warp's best remaining candidate by a butterfly argmax
// in topk's order (NaN first, then larger, then the lower index), carrying one payload value along
// (the router's unbiased score). Lane r ends holding pick r.
#include <cstdint>

#include "ops/topk_order.h"

namespace kiln::cuda {

struct Pick {
  float key = 0.f, payload = 0.f;
  int index = -1;
};

// taken: bit m set = candidate lane + 32 m unavailable (picked, masked, or past E).
template <int kPerLane>
__device__ __forceinline__ Pick warp_topk(const float (&key)[kPerLane],
                                          const float (&payload)[kPerLane], uint32_t taken, int k) {
  const int lane = threadIdx.x % 32;
  Pick mine;
  for (int r = 0; r < k; ++r) {
    Pick best;
#pragma unroll
    for (int m = 0; m < kPerLane; ++m) {
      if (taken & (1u << m)) continue;
      const int e = lane + 32 * m;
      if (best.index < 0 || topk_before(key[m], e, best.key, best.index)) {
        best = {key[m], payload[m], e};
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      Pick other;
      other.key = __shfl_xor_sync(~0u, best.key, o);
      other.payload = __shfl_xor_sync(~0u, best.payload, o);
      other.index = __shfl_xor_sync(~0u, best.index, o);
      if (other.index >= 0 &&
          (best.index < 0 || topk_before(other.key, other.index, best.key, best.index))) {
        best = other;
      }
    }
    if (best.index >= 0 && best.index % 32 == lane) taken |= 1u << (best.index / 32);
    if (lane == r) mine = best;
  }
  return mine;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(~0u, v, o));
  return v;
}

}  // namespace kiln::cuda
