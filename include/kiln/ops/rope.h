#pragma once
// Rotary position embedding (RoPE) of q and k in one pass, forward and backward.
//
// q: [T, Hq, D] and k: [T, Hk, D] (Hk <= Hq for GQA, or any count), one dtype of bf16, f16, f32;
// the last dim contiguous, the token and head strides free, so q and k may be strided views
// into one fused qkv buffer [T, (Hq + 2 Hk) D]. q_out, k_out: q's and k's shapes and dtype, each
// either the very same view as its input (in place) or memory that overlaps no input (out of
// place). Every tensor on one device.
//
// cos_sin_cache: f32 [max_position, rotary_dim], contiguous. Row p holds cos(p * theta_i) in
// columns [0, R/2) and sin(p * theta_i) in columns [R/2, R), i = 0 .. R/2 - 1 (R = rotary_dim;
// vLLM's convention). Plain RoPE has theta_i = base^(-2i / R); linear, NTK or YaRN scaling is
// just another cache (and YaRN's attention factor may be folded into its cos and sin).
// positions: int64 [T], one per token (varlen batches and decode alike), on the device.
// rotary_dim R: even, 2 <= R <= D; elements [R, D) of each head are not rotated (left in place,
// or copied through out of place).
//
// Angle i rotates one pair (x1, x2) of each head's elements, chosen by the layout:
//   neox: (i, i + R/2), the rotated part split in halves (GPT-NeoX, Llama, Qwen, Mistral);
//   gptj: (2i, 2i + 1), interleaved (GPT-J, ChatGLM, the original RoFormer).
// out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin, with c = cos_sin_cache[p, i],
// s = cos_sin_cache[p, R/2 + i] for the token's position p; fp32 math (float64 in the
// reference), one rounding to the dtype. The backward is the rotation by -theta (sin negated),
// the transpose of the forward: dq = R(-theta) dq_out, likewise dk.
//
// A position outside [0, max_position) is never read from the cache: that token's q and k are
// left as they are (in place) or copied unchanged (out of place), and the token is counted once
// into bad_positions, an int32 [1] tensor on the device that the caller zeroes and reads when it
// likes (kiln ops never synchronise). bad_positions may be absent (a default TensorView): bad
// positions are then still never read, only not counted, and nothing needs zeroing.
//
// Bytes moved: q and k read and written once (out of place: plus the tails [R, D) copied),
// positions read (8 T) and each token's cos/sin row (4 R T, shared by all its heads).
// FLOPs: 6 a pair (4 multiplies, 2 adds), T (Hq + Hk) R / 2 pairs.
#include <string_view>

#include "kiln/core/core.h"

namespace kiln {

enum class RopeLayout {
  neox,  // pairs (i, i + R/2)
  gptj,  // pairs (2i, 2i + 1)
};

// "neox" or "gptj"; any other name throws kiln::Error naming the op.
RopeLayout rope_layout(std::string_view name);
std::string_view rope_layout_name(RopeLayout layout);

// Fills a host cos_sin_cache [max_position, rotary_dim] (row-major, as above) for plain RoPE,
// theta_i = base^(-2i / R), each entry computed in float64 and rounded once. For tests, benchmarks
// and programs that build their cache on the host and copy it over.
void rope_fill_cache(float* cache, int64_t max_position, int64_t rotary_dim, double base = 10000.0);

void rope(const TensorView& q_out, const TensorView& k_out, const TensorView& q,
          const TensorView& k, const TensorView& cos_sin_cache, const TensorView& positions,
          RopeLayout layout, int64_t rotary_dim, const TensorView& bad_positions,
          Stream stream = nullptr);

// The gradients through rope: dq = R(-theta) dq_out, dk = R(-theta) dk_out, with rope's shapes,
// layouts and in-place rule (dq may be dq_out itself). Bad positions pass the gradient through
// unchanged (the forward was the identity there) and are counted as in the forward.
void rope_backward(const TensorView& dq, const TensorView& dk, const TensorView& dq_out,
                   const TensorView& dk_out, const TensorView& cos_sin_cache,
                   const TensorView& positions, RopeLayout layout, int64_t rotary_dim,
                   const TensorView& bad_positions, Stream stream = nullptr);

}  // namespace kiln
