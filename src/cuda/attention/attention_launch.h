#pragma once
// CUDA attention forward: the launch arguments of a validated problem (CUDA-free, so the entry
// point in src/ops builds without nvcc) and the launcher, which returns the variant it ran.
#include <cstdint>
#include <string>

#include "attention/mask_rules.h"
#include "kiln/core/dtype.h"
#include "kiln/core/stream.h"

namespace kiln::cuda {

// A [tokens, heads, dim] view with a contiguous dim: its data and element strides.
struct HeadRows {
  void* data = nullptr;
  int64_t token = 0, head = 0;
};

struct AttentionForwardArgs {
  HeadRows q, k, v, out;
  float* lse = nullptr;
  int64_t lse_head = 0, lse_token = 0;  // element strides of lse [Hq, total_q]
  // Device metadata: cu_seqlens int32 [B + 1]; documents int32 [total] and valid prefixes int32
  // [B] may be null. Bad values are counted into bad_metadata (int32 [1], may be null) by one CTA.
  const int32_t *cu_q = nullptr, *cu_k = nullptr;
  const int32_t *doc_q = nullptr, *doc_k = nullptr;
  const int32_t *valid_q = nullptr, *valid_k = nullptr;
  int32_t* bad_metadata = nullptr;
  int64_t total_q = 0, total_k = 0;
  int batch = 0, hq = 1, hkv = 1, head_dim = 0, head_dim_v = 0;
  DType dtype = DType::bf16;
  attention::MaskRules rules;
  // Paged K/V (block_table non-null): k and v are caches [num_pages, page_size, Hkv, D]; key j of
  // sequence b lives in page block_table[b * table_stride + j / page_size], slot j % page_size.
  // k.token / v.token are then the slot strides and k_page / v_page the page strides. Page ids
  // out of range are never read (zeros) and counted by the reporter CTA.
  const int32_t* block_table = nullptr;
  int64_t table_stride = 0, num_pages = 0, k_page = 0, v_page = 0;
  int max_pages = 0, page_shift = 0;  // page_size = 1 << page_shift
  float scale_log2 = 0;               // softmax_scale * log2(e): the scores in base-2 units
  float softcap_in = 0;               // softmax_scale / softcap (> 0 only when soft-capping)
  float softcap_log2 = 0;             // softcap * log2(e)
};

std::string attention_forward(const AttentionForwardArgs& a, Stream stream);

// The backward: f holds q, k, v, the forward's out and lse, the metadata and the scales.
struct AttentionBackwardArgs {
  AttentionForwardArgs f;
  HeadRows dout, dq, dk, dv;
  float softmax_scale = 0;
  float* delta = nullptr;  // scratch f32 [Hq, total_q]: rowsum(dout * out), set by the launcher
};

std::string attention_backward(const AttentionBackwardArgs& a, Stream stream);

}  // namespace kiln::cuda
