// Attention forward, D = 64, Dv = 64: 128-row query tiles, 64-key tiles.
#include "cuda/attention/attention_forward.cuh"
#include "cuda/attention/attention_forward_dims.h"

namespace kiln::cuda {

std::string attention_forward_d64(const AttentionForwardArgs& a, Stream stream) {
  return attention_fwd::launch<64, 64, 2, 64>(a, stream);
}

}  // namespace kiln::cuda
