#pragma once
// The expert path of a mixture-of-experts layer (issue 5): every routed (token, pick) through
// its expert's up projection, activation and down projection, weighted and summed per token.
//
// x [T, H] (bf16 or f16; rows may be strided, the last dim contiguous).
// w13 [E_local, 2I, H] for the gated activations (rows 0..I-1 the gate, I..2I-1 the up
// projection), [E_local, I, H] for relu2; w2 [E_local, H, I]; both contiguous, of x's dtype or
// both f8e4m3 (below).
// topk_weights f32 [T, k] and topk_ids int32 [T, k] (a router's outputs, ids in [0, E)).
// expert_map int32 [E] maps global ids to local experts (-1: not held here, the pick is dropped:
// expert parallelism), or absent (E = E_local, the identity).
// out [T, H] of x's dtype:
//   out[t] = sum_j topk_weights[t, j] * w2[e] · act(w13[e] · x[t]), e the local expert of pick j.
// act: swiglu = silu(gate) · up; gelu_tanh / gelu_erf = GELU(gate) · (up + 1) (Kestrel's
// gelu_residual); relu2 = relu(h)². The intermediate act(...) [I] is rounded to x's dtype (what
// the two grouped GEMMs store between them); products accumulate in fp32 (float64 in the
// reference); picks add in order j = 0 .. k-1.
// FP8 weights (w8a16, the decode path): w13 and w2 of dtype f8e4m3 with DeepSeek-V3's 128 x 128
// block scales, f32 and contiguous, in weight_scales: w13 [E_local, ceil(rows13 / 128),
// ceil(H / 128)], w2 [E_local, ceil(H / 128), ceil(I / 128)] (rows13 = 2I gated, I for relu2):
// weight element (e, r, c) stands for fp32(w[e, r, c]) * scale[e, r / 128, c / 128]. (For rows
// that are multiples of 128, quantize_fp8's block granularity over the [E_local * rows, cols]
// view writes exactly this layout.) x stays bf16/f16; the products are fp32 on the weights
// dequantized as they are read; the intermediate is rounded to x's dtype. With bf16/f16 weights
// the scales are absent. On CUDA, w8a16 takes the per-pick GEMV kernels below 256 picks (T k) and
// the by-expert kernels from 256 on (a run of up to 16 picks of one expert on tensor-core MMAs,
// where H and I are multiples of 64 and the rows 16-byte aligned; else the per-pick ones); w8a8
// (below) the FP8 grouped GEMMs.
// bad_ids: int32 [1] on x's device, a counter the caller zeroes and reads when it likes (ops never
// synchronise; DESIGN.md "Errors").
// CPU tensors run the float64 reference; their ids and map values are host data, checked before
// anything is read: a bad one is a kiln::Error.
// CUDA tensors: below 512 picks (T k), two GEMV-style kernels (a warp per output); from 512 on a
// Hopper GPU, the grouped wgmma path (align, gather, two grouped GEMMs, combine).
// Ids and map values are on the device there: a pick whose id is outside [0, E) or whose map value
// is outside [-1, E_local) is skipped (contributes 0, never dereferenced) and counted into bad_ids.
// The receipt names the path. T = 0 or H = 0 reads nothing (and counts nothing).
// KILN_FUSED_MOE=gemv | gemv_experts | grouped forces the per-pick GEMV kernels, the by-expert
// kernels (picks grouped by local expert first: the MMA form for FP8 weights where it fits, FMA
// GEMV kernels otherwise) or the grouped path, for A/B runs: forcing a path that cannot take the
// problem, or any other value, is a kiln::Error.
#include <cstdint>

#include "kiln/core/core.h"

namespace kiln {

enum class MoeActivation { swiglu, gelu_tanh, gelu_erf, relu2 };

// The block scales of FP8 expert weights (see above); absent for bf16/f16 weights.
// fp8_activations (w8a8, FP8 weights only): the activations are quantized too, as DeepSeek-V3
// does: x [T, H] and the intermediate [I] (after its rounding to x's dtype) each to e4m3 in
// 1 x 128 groups along their last dim, scale = max(amax, 1e-4) / 448 per group, value =
// e4m3(v * (1 / scale)) (nearest even, saturating), and the products run on those values times
// their scales. CUDA runs it on the FP8 grouped wgmma GEMMs at every T (Hopper only: elsewhere,
// or with KILN_FUSED_MOE=gemv or gemv_experts, it is an error). The reference quantizes the same
// way.
struct MoeWeightScales {
  TensorView w13, w2;
  bool fp8_activations = false;
};

void fused_moe(const TensorView& out, const TensorView& x, const TensorView& w13,
               const TensorView& w2, const TensorView& topk_weights, const TensorView& topk_ids,
               MoeActivation activation, const TensorView& expert_map, const TensorView& bad_ids,
               const MoeWeightScales& weight_scales = {}, Stream stream = nullptr);

}  // namespace kiln
