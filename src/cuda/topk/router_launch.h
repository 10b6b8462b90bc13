#pragma once
// CUDA routers: launches for a validated problem; returns the variant name.
#include <algorithm>
#include <cstdint>
#include <string>

#include "core/int_math.h"
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

// H elements a slice when H is cut into `splits`: a multiple of kDenseRouterSliceAlign.
inline int64_t dense_router_slice(int64_t hidden, int64_t splits) {
  return ceil_div(ceil_div(hidden, splits), kDenseRouterSliceAlign) * kDenseRouterSliceAlign;
}

// Slices of H: about two blocks a SM (at most one slice an aligned step of H), no empty slice.
inline int64_t dense_router_splits(int64_t experts, int64_t hidden, int sm_count) {
  if (hidden <= 0) return 1;
  const int64_t expert_blocks = ceil_div(experts, kDenseRouterExperts);
  const int64_t want = std::clamp<int64_t>(ceil_div(2 * int64_t{sm_count}, expert_blocks), 1,
                                           ceil_div(hidden, kDenseRouterSliceAlign));
  return ceil_div(hidden, dense_router_slice(hidden, want));
}

// The scratch, as byte offsets from its start: the fp32 logits [T, E] at 0, then for the fused
// path the partials [splits, T, E] and the block counter, each piece 256-byte aligned.
struct DenseRouterScratch {
  size_t partials = 0, counter = 0, bytes = 0;
};

inline DenseRouterScratch dense_router_scratch(int64_t tokens, int64_t experts, int64_t hidden,
                                               int sm_count) {
  auto round = [](int64_t b) { return static_cast<size_t>(ceil_div(b, 256) * 256); };
  DenseRouterScratch s;
  s.partials = s.bytes = round(tokens * experts * 4);
  if (tokens <= kDenseRouterFusedMaxTokens) {
    s.counter =
        s.partials + round(dense_router_splits(experts, hidden, sm_count) * tokens * experts * 4);
    s.bytes = s.counter + 256;
  }
  return s;
}

inline size_t dense_router_workspace_bytes(int64_t tokens, int64_t experts, int64_t hidden,
                                           int sm_count) {
  return dense_router_scratch(tokens, experts, hidden, sm_count).bytes;
}

std::string dense_router(const DenseRouterProblem& p, Stream stream);

// hash_router.cu: a thread per (token, pick).
std::string hash_router(const HashRouterProblem& p, Stream stream);

}  // namespace kiln::cuda
