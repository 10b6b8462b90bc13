// Attention forward, D = 128, Dv = 128: 128-row query tiles, 32-key tiles.
#include "cuda/attention/attention_forward.cuh"
#include "cuda/attention/attention_forward_dims.h"

namespace kiln::cuda {

std::string attention_forward_d128(const AttentionForwardArgs& a, Stream stream) {
#if KILN_LAB_ATTN_D128_M64  // A/B (tools/lab-ab): 64-row tiles of 64 keys, 224 registers
  return attention_fwd::launch<128, 128, 1, 64>(a, stream);
#else
  return attention_fwd::launch<128, 128, 2, 32>(a, stream);
#endif
}

}  // namespace kiln::cuda
