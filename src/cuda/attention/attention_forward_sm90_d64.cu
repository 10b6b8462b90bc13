// Attention forward on wgmma + TMA, D = 64, Dv = 64: 128-row query tiles, 128-key tiles.
#include "cuda/attention/attention_forward_dims.h"
#include "cuda/attention/attention_forward_sm90.cuh"

namespace kiln::cuda {

std::string attention_forward_sm90_d64(const AttentionForwardArgs& a, Stream stream) {
  return attention_sm90::launch<64, 64, 128>(a, stream);
}

}  // namespace kiln::cuda
