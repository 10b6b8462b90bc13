#pragma once
// CUDA routers: launches for a validated problem; returns the variant name.
#include <algorithm>
#include <cstdint>
#include <string>

#include "kiln/core/stream.h"
#include "ops/router_problem.h"

namespace kiln::cuda {

std::string router(const RouterProblem& p, Stream stream);

// dense_router.cu. Up to kDenseRouterFusedMaxTokens tokens, one fused kernel: blocks of
// kDenseRouterExperts experts (a warp each) over `splits` slices of H write fp32 partial logits;
// the last block adds them in slice order and routes. Above it, a cuBLAS GEMM (fp32 out) and the
// router kernel. The split count and the scratch size are pure functions of the shape and the SM
// count (host-tested).
inline constexpr int64_t kDenseRouterFusedMaxTokens = 16;
inline constexpr int kDenseRouterExperts = 8;
inline constexpr int64_t kDenseRouterSliceAlign = 256;  // H elements: whole 16-byte packs a lane

// Slices of H: about two blocks a SM, each slice a multiple of kDenseRouterSliceAlign elements.
inline int64_t dense_router_splits(int64_t experts, int64_t hidden, int sm_count) {
  if (hidden <= 0) return 1;
  const int64_t expert_blocks = (experts + kDenseRouterExperts - 1) / kDenseRouterExperts;
  const int64_t max_splits =
      std::max<int64_t>(1, (hidden + kDenseRouterSliceAlign - 1) / kDenseRouterSliceAlign);
  const int64_t want = (2 * int64_t{sm_count} + expert_blocks - 1) / expert_blocks;
  const int64_t slice = (hidden + std::clamp<int64_t>(want, 1, max_splits) - 1) /
                        std::clamp<int64_t>(want, 1, max_splits);
  const int64_t aligned =
      (slice + kDenseRouterSliceAlign - 1) / kDenseRouterSliceAlign * kDenseRouterSliceAlign;
  return std::max<int64_t>(1, (hidden + aligned - 1) / aligned);
}

// H elements a slice.
inline int64_t dense_router_slice(int64_t hidden, int64_t splits) {
  const int64_t slice = (hidden + splits - 1) / splits;
  return (slice + kDenseRouterSliceAlign - 1) / kDenseRouterSliceAlign * kDenseRouterSliceAlign;
}

// Scratch: the fp32 logits [T, E], plus for the fused path the partials [splits, T, E] and the
// block counter, each piece 256-byte aligned.
inline size_t dense_router_workspace_bytes(int64_t tokens, int64_t experts, int64_t hidden,
                                           int sm_count) {
  auto round = [](int64_t b) { return static_cast<size_t>((b + 255) / 256 * 256); };
  size_t bytes = round(tokens * experts * 4);
  if (tokens <= kDenseRouterFusedMaxTokens) {
    bytes += round(dense_router_splits(experts, hidden, sm_count) * tokens * experts * 4) + 256;
  }
  return bytes;
}

std::string dense_router(const DenseRouterProblem& p, Stream stream);

// hash_router.cu: a thread per (token, pick).
std::string hash_router(const HashRouterProblem& p, Stream stream);

}  // namespace kiln::cuda
