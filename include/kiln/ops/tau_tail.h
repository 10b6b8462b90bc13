#pragma once
// Attention ingress scaling (Kestrel's tau tail), in place on a fused qkv buffer, one pass:
//   q[t, h, :] *= tanh(tok_qv_lin[t, h])     + tau_pos_table[positions[t], h]
//   v[t, h, :] *= tanh(tok_qv_lin[t, H + h]) + tau_pos_table[positions[t], h]
// k is left alone.
//
// qkv: [T, 3 * H * D] (q | k | v, each [H, D] a token), bf16, f16 or f32, the last dim contiguous,
// rows strided freely; tok_qv_lin: [T, 2 * H] (tok_q | tok_v), of qkv's dtype or f32;
// tau_pos_table: [P, H], of qkv's dtype or f32, contiguous; positions: int32 or int64 [T].
// heads = H is given; D = the row's length / (3 H). fp32 math, one rounding of each scaled value.
// A position outside [0, P) is never read: that token's q and v are left as they were and the
// position is counted into bad_positions (int32 [1] on the device; the caller zeroes and reads it),
// or not counted when bad_positions is absent (a default TensorView): still never read.
// Forward only (the inference path).
#include "kiln/core/core.h"

namespace kiln {

void tau_tail(const TensorView& qkv, const TensorView& tok_qv_lin, const TensorView& tau_pos_table,
              const TensorView& positions, int64_t heads, const TensorView& bad_positions,
              Stream stream = nullptr);

}  // namespace kiln
