#pragma once
// Dense attention over packed variable-length sequences (issue 4): the contract, validated in
// full. CPU tensors run the float64 reference; CUDA tensors run the kernels (FlashAttention-2
// style on mma.sync for now; wgmma + TMA to come). The CUDA backward is deterministic: dK/dV and
// dQ in separate passes, no atomics, the same bits every run.
//
// On the GPU, q, k, v and out need 16-byte aligned data and token/head strides (multiples of 8
// elements); document ids must be non-decreasing along each sequence (the kernels skip key tiles
// by the id ranges of their first and last tokens): each decrease is counted into
// masks.bad_metadata, and such a sequence's results mean nothing.
//
// q [total_q, Hq, D], k [total_k, Hkv, D], v [total_k, Hkv, Dv]; bf16 or f16, one dtype; the last
// dim contiguous, the other strides free (views into one fused qkv buffer work). Hq a multiple of
// Hkv (GQA, MQA): query head h reads kv head h / (Hq / Hkv). Head dims: D = Dv in {64, 128, 256},
// or MLA's D = 192 with Dv = 128.
// cu_seqlens_q / cu_seqlens_k: int32 [B + 1], 0 first, non-decreasing, ending at total_q /
// total_k. Masks (src/attention/mask_rules.h, the same rule as doc_window_mask): causal (aligned
// bottom-right when a sequence has fewer queries than keys), a sliding window (left, right; < 0 is
// unbounded), document ids (int32 [total_q] and [total_k], both or neither) and valid prefixes
// (int32 [B] each, or absent). Scores are q·k * softmax_scale, soft-capped to
// softcap * tanh(s / softcap) when softcap > 0.
// out [total_q, Hq, Dv] (q's dtype) and lse float32 [Hq, total_q] = log sum_j exp(score_j) over
// the visible keys; a query that sees no key gets out = 0 and lse = -inf. fp32 accumulation
// (float64 in the reference).
#include <cstdint>

#include "kiln/core/core.h"

namespace kiln {

struct AttentionMasks {
  TensorView cu_seqlens_q, cu_seqlens_k;  // int32 [B + 1]
  TensorView doc_ids_q, doc_ids_k;        // int32 [total_q], [total_k], or absent
  TensorView valid_q, valid_k;            // int32 [B], or absent
  bool causal = false;
  int64_t window_left = -1, window_right = -1;
  // int32 [1] on the GPU, or absent. The metadata of CUDA tensors stays on the device (no host
  // copy, no sync): the kernel checks each sequence (offsets within the tensors and
  // non-decreasing, cu_seqlens 0 first and ending at the totals, valid prefixes within their
  // sequence) and adds the number of bad ones here; a bad sequence is skipped (its rows of out
  // and lse are not written). CPU metadata is checked on the host and throws instead.
  TensorView bad_metadata;
};

struct AttentionOptions {
  double softmax_scale = 0;  // > 0 (callers usually pass 1 / sqrt(D))
  double softcap = 0;        // > 0: soft-cap the scores
};

void attention_varlen(const TensorView& out, const TensorView& lse, const TensorView& q,
                      const TensorView& k, const TensorView& v, const AttentionMasks& masks,
                      const AttentionOptions& options, Stream stream = nullptr);

// The forward over a paged KV cache (chunked prefill, prefix caching): key_cache [num_pages,
// page_size, Hkv, D] and value_cache [num_pages, page_size, Hkv, Dv] of q's dtype (last dim
// contiguous), block_table int32 [B, max_pages]: key j of sequence b sits in page
// block_table[b][j / page_size], slot j % page_size; page_size a power of two >= 16. The keys'
// lengths are the differences of masks.cu_seqlens_k (the keys are not packed, so only the
// lengths count); document ids are not supported with a cache. The result is the contiguous
// forward's to the bit (same kernel, same math). Page ids outside [0, num_pages) and sequences
// needing more than max_pages pages are never read: on the CPU a kiln::Error, on the GPU
// counted into masks.bad_metadata (those keys read as zeros).
void attention_varlen_paged(const TensorView& out, const TensorView& lse, const TensorView& q,
                            const TensorView& key_cache, const TensorView& value_cache,
                            const TensorView& block_table, const AttentionMasks& masks,
                            const AttentionOptions& options, Stream stream = nullptr);

// dq, dk, dv of sum(out * dout): dq like q, dk like k, dv like v (GQA heads summed into their kv
// head, in a fixed order). out and lse are the forward's. On the GPU a float32 [Hq, total_q]
// scratch is taken from the stream's memory pool (cudaMallocAsync) for the call.
void attention_varlen_backward(const TensorView& dq, const TensorView& dk, const TensorView& dv,
                               const TensorView& dout, const TensorView& q, const TensorView& k,
                               const TensorView& v, const TensorView& out, const TensorView& lse,
                               const AttentionMasks& masks, const AttentionOptions& options,
                               Stream stream = nullptr);

}  // namespace kiln
