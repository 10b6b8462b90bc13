// Attention backward, D = 128, Dv = 128: dQ over 64-key tiles, dK/dV over 32-query tiles.
#include "cuda/attention/attention_backward.cuh"
#include "cuda/attention/attention_backward_dims.h"

namespace kiln::cuda {

std::string attention_backward_d128(const AttentionBackwardArgs& a, Stream stream) {
  return attention_bwd::launch<128, 128, 64, 32>(a, stream);
}

}  // namespace kiln::cuda
