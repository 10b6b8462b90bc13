// Attention backward, D = 64, Dv = 64: dQ over 64-key tiles, dK/dV over 64-query tiles.
#include "cuda/attention/attention_backward.cuh"
#include "cuda/attention/attention_backward_dims.h"

namespace kiln::cuda {

std::string attention_backward_d64(const AttentionBackwardArgs& a, Stream stream) {
  return attention_bwd::launch<64, 64, 64, 64>(a, stream);
}

}  // namespace kiln::cuda
