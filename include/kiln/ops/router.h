#pragma once
// MoE routers (issue 5): logits [T, E] -> (weights f32 [T, k], ids int32 [T, k]) in one call.
//
// logits [T, E] f32/bf16/f16 (the last dim contiguous), E <= 1024, 1 <= k <= min(E, 32). Picks are
// sorted by their selection score, descending, ties to the lower expert id (topk's order).
// - softmax:     p = softmax(logits) over E; picks = top-k of p; weights = p[picks], divided by
//                their sum when renormalize.
// - deepseek_v3: s = sigmoid(logits); selection = s + bias[e] (bias f32 [E], selection only);
//                experts in n_group equal groups; a group's score = the sum of its two largest
//                selections (its largest when a group has one expert); the topk_group best groups
//                (ties to the lower group) are kept; picks = top-k selections among their experts;
//                weights = s[picks] / sum(s[picks]) * routed_scaling_factor.
// - activation:  (MegaMoE) s = sqrt(softplus(logits)), softplus(x) = max(x, 0) + log1p(exp(-|x|))
//                (stable); selection = s + bias[e] (bias optional); picks = top-k selections;
//                weights = s[picks] / sum(s[picks]).
// fp32 math on a GPU (a warp a row; n_group <= 32 there), float64 in the reference. Selections
// within fp32 rounding of each other may be ordered differently by the two (the GPU tests use
// well-separated scores).
#include <cstdint>

#include "kiln/core/core.h"

namespace kiln {

enum class RouterKind { softmax, deepseek_v3, activation };

struct RouterConfig {
  RouterKind kind = RouterKind::softmax;
  int64_t k = 1;
  bool renormalize = false;  // softmax only (the others always renormalise)
  TensorView bias;           // f32 [E], selection only: deepseek_v3 (required), activation
  int64_t n_group = 1, topk_group = 1;  // deepseek_v3
  double routed_scaling_factor = 1.0;   // deepseek_v3
};

void router(const TensorView& weights, const TensorView& ids, const TensorView& logits,
            const RouterConfig& config, Stream stream = nullptr);

// The dense router from hidden states: logits = x · gate^T in fp32, then router(config) on them,
// from one entry point that picks how (the receipt's variant names the path it took):
// - T <= 16 (decode): one fused kernel. Blocks of 8 experts (a warp each) over slices of H write
//   fp32 partial dot products; the last block to finish adds them in slice order and routes
//   every token with the router's warp-per-row code. About two blocks a SM read the gate once.
// - T > 16: a cuBLAS GEMM (fp32 accumulate and output) into the workspace, then the router kernel.
// Both paths sum in fp32 in their own orders, so logits differ between them by fp32 rounding and
// a near tie can be picked differently (as between any two GEMMs).
// x [T, H] f32/bf16/f16 (rows may be strided, the last dim contiguous); gate [E, H] of x's dtype,
// contiguous; E <= 1024 and config as for router. weights f32 [T, k], ids int32 [T, k];
// logits_out: optional f32 [T, E] (rows may be strided) that receives the logits (for an
// auxiliary loss); absent, they stay in the workspace. workspace: dense_router_workspace_size
// bytes on CUDA (0 on CPU). CPU runs the float64 products rounded to fp32, then the reference
// router. The cuBLAS handle is made on a thread's first large-T call on a device: make one before
// capturing a CUDA graph; the fused path allocates nothing.
size_t dense_router_workspace_size(int64_t tokens, int64_t experts, int64_t hidden,
                                   const Device& device);

void dense_router(const TensorView& weights, const TensorView& ids, const TensorView& logits_out,
                  const TensorView& x, const TensorView& gate, const RouterConfig& config,
                  const Workspace& workspace, Stream stream = nullptr);

// The hash router: ids[t] = table[token_ids[t]] (table int32 [vocab, k], token_ids int64 [T]),
// weights 1 / k. A token id outside [0, vocab) is never read: its ids are -1, its weights 0, and it
// is counted into bad_token_ids (int32 [1] on the tokens' device, the caller zeroes it). It may be
// absent (a default TensorView): bad ids still give -1 / 0, uncounted. CPU (the reference) and
// CUDA (a thread per token).
void hash_router(const TensorView& weights, const TensorView& ids, const TensorView& token_ids,
                 const TensorView& table, const TensorView& bad_token_ids, Stream stream = nullptr);

}  // namespace kiln
