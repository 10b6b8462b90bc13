#pragma once
// Attention in float64, the oracle the attention kernels will match (issue 4): plain
// softmax(q kᵀ · scale (soft-capped) + mask) · v over packed variable-length sequences, and its
// backward. The mask is src/attention/mask_rules.h's, per (sequence, query, key).
//
// Layout (dense, row-major, float64): q [total_q, hq, d], k [total_k, hkv, d], v [total_k, hkv,
// dv], out [total_q, hq, dv], lse [hq, total_q]; query head h reads kv head h / (hq / hkv) (GQA).
// Sequence b holds queries [cu_q[b], cu_q[b + 1]) and keys [cu_k[b], cu_k[b + 1]); its valid
// prefixes are valid_q[b] / valid_k[b] (null: the whole sequence) and token t's document is
// doc_q[t] / doc_k[t] (null: one document). A query that sees no key gets out = 0, lse = -inf.
#include <cstdint>
#include <vector>

#include "attention/mask_rules.h"

namespace kiln::ref {

struct AttentionShape {
  std::vector<int32_t> cu_q, cu_k;        // [B + 1], non-decreasing, from 0
  std::vector<int32_t> valid_q, valid_k;  // [B] or empty
  std::vector<int32_t> doc_q, doc_k;      // [total_q], [total_k] or empty
  int64_t hq = 1, hkv = 1, d = 1, dv = 1;
  double scale = 1.0;
  double softcap = 0.0;  // > 0: scores become softcap * tanh(score / softcap)
  attention::MaskRules rules;
  int64_t batch() const { return static_cast<int64_t>(cu_q.size()) - 1; }
  int64_t total_q() const { return cu_q.back(); }
  int64_t total_k() const { return cu_k.back(); }
  attention::SequenceShape sequence(int64_t b) const;
  bool visible(int64_t b, int64_t i, int64_t j) const;  // i, j within sequence b
};

void attention_forward(const AttentionShape& s, const double* q, const double* k, const double* v,
                       double* out, double* lse);

// dq, dk, dv of sum(out * dout); GQA heads sharing a kv head add into its dk, dv.
void attention_backward(const AttentionShape& s, const double* q, const double* k, const double* v,
                        const double* dout, double* dq, double* dk, double* dv);

}  // namespace kiln::ref
