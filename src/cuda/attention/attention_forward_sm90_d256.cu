// Attention forward on wgmma + TMA, D = 256, Dv = 256: 128-row query tiles, 64-key tiles (O takes
// 128 registers a thread; Q, K and V fill 192 KB of shared memory).
#include "cuda/attention/attention_forward_dims.h"
#include "cuda/attention/attention_forward_sm90.cuh"

namespace kiln::cuda {

std::string attention_forward_sm90_d256(const AttentionForwardArgs& a, Stream stream) {
  return attention_sm90::launch<256, 256, 64>(a, stream);
}

}  // namespace kiln::cuda
