#pragma once
// The attention mask contracts as ops of their own (issue 4): the normalisation of validity
// metadata and the dense debugging mask that every dense and sparse attention path must agree
// with. Both run on the host (CPU tensors): they prepare and check metadata before a launch, and
// the dense mask is O(total_q x total_k), a debugging and fallback form. The per-pair rule and
// the kernels' tile skipping share one definition (src/attention/mask_rules.h).
//
// Packed sequences: cu_seqlens int32 [B + 1], cu_seqlens[0] = 0, non-decreasing; sequence b is
// tokens [cu_seqlens[b], cu_seqlens[b + 1]).
#include <cstdint>

#include "kiln/core/core.h"

namespace kiln {

// valid_lengths int32 [B] = the valid prefix of each sequence, from either or both of:
// - token_prefix int32 [B]: the count of valid tokens, 0 <= token_prefix[b] <= the length;
// - slot_mask bool or uint8 [total]: per token, nonzero = valid; within a sequence the valid
//   tokens must be a prefix (no valid token after an invalid one).
// Both given: they must agree. Neither: every token is valid. Anything else is a kiln::Error
// naming the sequence (and the token for a slot mask that is not a prefix).
void attention_validity(const TensorView& valid_lengths, const TensorView& cu_seqlens,
                        const TensorView& token_prefix, const TensorView& slot_mask);

// mask bool [total_q, total_k]: mask[tq, tk] = 1 iff query token tq and key token tk are in the
// same sequence b and key j = tk - cu_seqlens_k[b] is visible to query i = tq - cu_seqlens_q[b]:
// i < valid_q[b], j < valid_k[b]; causal: j <= i + (lk - lq) (bottom-right aligned); window:
// i + (lk - lq) - window_left <= j <= i + (lk - lq) + window_right (a negative bound is none);
// doc_ids_q[tq] == doc_ids_k[tk]. Optional: valid_q, valid_k int32 [B] (absent: whole sequences),
// doc_ids_q int32 [total_q] and doc_ids_k int32 [total_k] (absent: one document; give both or
// neither).
void doc_window_mask(const TensorView& mask, const TensorView& cu_seqlens_q,
                     const TensorView& cu_seqlens_k, const TensorView& doc_ids_q,
                     const TensorView& doc_ids_k, const TensorView& valid_q,
                     const TensorView& valid_k, bool causal, int64_t window_left,
                     int64_t window_right);

}  // namespace kiln
