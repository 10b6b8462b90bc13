// Attention backward: the delta scratch (stream-ordered, so no sync and graph-capturable) and the
// head-dim configuration (the entry point has checked the dims).
#include <cuda_runtime.h>

#include "cuda/attention/attention_backward_dims.h"
#include "cuda/attention/sm90_tiles.cuh"
#include "cuda/common/cuda_check.h"
#include "kiln/core/error.h"

namespace kiln::cuda {
namespace {

// The wgmma backward for a's head dims, when there is one and it takes a; "" otherwise.
std::string attention_backward_wgmma(const AttentionBackwardArgs& a, Stream stream) {
  if (sm90_tiles::mma_sync_forced("KILN_ATTENTION_BWD")) return "";
  if (a.f.head_dim != a.f.head_dim_v) return "";
  if (a.f.head_dim == 64) return attention_backward_sm90_d64(a, stream);
  if (a.f.head_dim == 128) return attention_backward_sm90_d128(a, stream);
  return "";
}

}  // namespace

std::string attention_backward(const AttentionBackwardArgs& args, Stream stream) {
  const AttentionForwardArgs& f = args.f;
  AttentionBackwardArgs a = args;
  const auto s = static_cast<cudaStream_t>(stream);
  const size_t bytes = static_cast<size_t>(f.hq) * static_cast<size_t>(f.total_q) * sizeof(float);
  void* delta = nullptr;
  KILN_CUDA_CHECK(cudaMallocAsync(&delta, bytes > 0 ? bytes : 4, s));
  a.delta = static_cast<float*>(delta);
  std::string variant = attention_backward_wgmma(a, stream);
  if (!variant.empty()) {
    KILN_CUDA_CHECK(cudaFreeAsync(delta, s));
    return variant;
  }
  if (f.head_dim == 64 && f.head_dim_v == 64) {
    variant = attention_backward_d64(a, stream);
  } else if (f.head_dim == 128 && f.head_dim_v == 128) {
    variant = attention_backward_d128(a, stream);
  } else if (f.head_dim == 256 && f.head_dim_v == 256) {
    variant = attention_backward_d256(a, stream);
  } else if (f.head_dim == 192 && f.head_dim_v == 128) {
    variant = attention_backward_d192_dv128(a, stream);
  } else {
    cudaFreeAsync(delta, s);
    throw Error("attention_varlen_backward: no CUDA kernel for D = " + std::to_string(f.head_dim) +
                ", Dv = " + std::to_string(f.head_dim_v));
  }
  KILN_CUDA_CHECK(cudaFreeAsync(delta, s));
  return variant;
}

}  // namespace kiln::cuda
