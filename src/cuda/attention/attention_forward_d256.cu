// Attention forward, D = 256, Dv = 256: 64-row query tiles, 32-key tiles.
#include "cuda/attention/attention_forward.cuh"
#include "cuda/attention/attention_forward_dims.h"

namespace kiln::cuda {

std::string attention_forward_d256(const AttentionForwardArgs& a, Stream stream) {
  return attention_fwd::launch<256, 256, 1, 32>(a, stream);
}

}  // namespace kiln::cuda
