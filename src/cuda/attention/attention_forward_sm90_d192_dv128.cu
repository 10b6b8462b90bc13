// Attention forward on wgmma + TMA, D = 192, Dv = 128: 128-row query tiles, 128-key tiles.
#include "cuda/attention/attention_forward_dims.h"
#include "cuda/attention/attention_forward_sm90.cuh"

namespace kiln::cuda {

std::string attention_forward_sm90_d192_dv128(const AttentionForwardArgs& a, Stream stream) {
  return attention_sm90::launch<192, 128, 128>(a, stream);
}

}  // namespace kiln::cuda
