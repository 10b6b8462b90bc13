// Attention backward on wgmma + TMA, D = Dv = 128: dK/dV over 128-key tiles, dQ over 128-query
// tiles.
#include "cuda/attention/attention_backward_dims.h"
#include "cuda/attention/attention_backward_sm90.cuh"

namespace kiln::cuda {

std::string attention_backward_sm90_d128(const AttentionBackwardArgs& a, Stream stream) {
  return attention_bwd_sm90::launch<128>(a, stream);
}

}  // namespace kiln::cuda
