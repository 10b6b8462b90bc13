// Attention forward: picks the head-dim configuration (the entry point has checked the dims).
#include "cuda/attention/attention_forward_dims.h"
#include "cuda/attention/sm90_tiles.cuh"
#include "kiln/core/error.h"

namespace kiln::cuda {
namespace {

// The wgmma kernel for a's head dims, when there is one and it takes a; "" otherwise.
std::string attention_forward_wgmma(const AttentionForwardArgs& a, Stream stream) {
  if (sm90_tiles::mma_sync_forced("KILN_ATTENTION_FWD")) return "";
  if (a.head_dim == 64 && a.head_dim_v == 64) return attention_forward_sm90_d64(a, stream);
  if (a.head_dim == 128 && a.head_dim_v == 128) return attention_forward_sm90_d128(a, stream);
  if (a.head_dim == 192 && a.head_dim_v == 128) return attention_forward_sm90_d192_dv128(a, stream);
  if (a.head_dim == 256 && a.head_dim_v == 256) return attention_forward_sm90_d256(a, stream);
  return "";
}

}  // namespace

std::string attention_forward(const AttentionForwardArgs& a, Stream stream) {
  if (std::string ran = attention_forward_wgmma(a, stream); !ran.empty()) return ran;
  if (a.head_dim == 64 && a.head_dim_v == 64) return attention_forward_d64(a, stream);
  if (a.head_dim == 128 && a.head_dim_v == 128) return attention_forward_d128(a, stream);
  if (a.head_dim == 256 && a.head_dim_v == 256) return attention_forward_d256(a, stream);
  if (a.head_dim == 192 && a.head_dim_v == 128) return attention_forward_d192_dv128(a, stream);
  throw Error("attention_varlen: no CUDA kernel for D = " + std::to_string(a.head_dim) +
              ", Dv = " + std::to_string(a.head_dim_v));
}

}  // namespace kiln::cuda
