// Attention forward, D = 192, Dv = 128: 64-row query tiles, 64-key tiles.
#include "cuda/attention/attention_forward.cuh"
#include "cuda/attention/attention_forward_dims.h"

namespace kiln::cuda {

std::string attention_forward_d192_dv128(const AttentionForwardArgs& a, Stream stream) {
  return attention_fwd::launch<192, 128, 1, 64>(a, stream);
}

}  // namespace kiln::cuda
