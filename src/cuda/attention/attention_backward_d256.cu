// Attention backward, D = 256, Dv = 256: dQ over 32-key tiles, dK/dV over 32-query tiles.
#include "cuda/attention/attention_backward.cuh"
#include "cuda/attention/attention_backward_dims.h"

namespace kiln::cuda {

std::string attention_backward_d256(const AttentionBackwardArgs& a, Stream stream) {
  return attention_bwd::launch<256, 256, 32, 32>(a, stream);
}

}  // namespace kiln::cuda
