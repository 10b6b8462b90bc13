// Entry points of the attention mask contracts: validate, then compute on the host.
#include "kiln/ops/attention_mask.h"

#include <string>
#include <vector>

#include "attention/mask_rules.h"
#include "core/check.h"
#include "kiln/core/receipt.h"
#include "ops/attention_metadata.h"

namespace kiln {

using attention_metadata::int32_vector;
using attention_metadata::on_cpu;
using attention_metadata::seqlens;

void attention_validity(const TensorView& valid_lengths, const TensorView& cu_seqlens,
                        const TensorView& token_prefix, const TensorView& slot_mask) {
  constexpr std::string_view op = "attention_validity";
  const std::vector<int32_t> cu = seqlens(op, "cu_seqlens", cu_seqlens);
  const int64_t batch = static_cast<int64_t>(cu.size()) - 1;
  check::present(op, "valid_lengths", valid_lengths);
  on_cpu(op, "valid_lengths", valid_lengths);
  check::dtype_in(op, "valid_lengths", valid_lengths, {DType::i32});
  check::vector_of(op, "valid_lengths", valid_lengths, batch);
  std::vector<int32_t> valid =
      attention_metadata::valid_lengths(op, "token_prefix", token_prefix, cu);
  if (slot_mask.defined()) {
    on_cpu(op, "slot_mask", slot_mask);
    check::dtype_in(op, "slot_mask", slot_mask, {DType::boolean, DType::u8});
    check::vector_of(op, "slot_mask", slot_mask, cu.back());
    const auto* m = static_cast<const uint8_t*>(slot_mask.data);
    for (int64_t b = 0; b < batch; ++b) {
      int32_t count = 0;
      for (int32_t t = cu[b]; t < cu[b + 1]; ++t) {
        const bool on = m[t * slot_mask.stride(0)] != 0;
        if (on && count != t - cu[b]) {
          throw_arg_error(op, "slot_mask", "the valid slots of each sequence to be a prefix",
                          "sequence " + std::to_string(b) + ": token " + std::to_string(t) +
                              " valid after an invalid one");
        }
        count += on;
      }
      if (token_prefix.defined() && count != valid[b]) {
        throw_arg_error(op, "slot_mask", "the same valid length as token_prefix",
                        "sequence " + std::to_string(b) + ": " + std::to_string(count) + " vs " +
                            std::to_string(valid[b]));
      }
      valid[b] = count;
    }
  }
  for (int64_t b = 0; b < batch; ++b) {
    static_cast<int32_t*>(valid_lengths.data)[b * valid_lengths.stride(0)] = valid[b];
  }
  record_receipt({std::string(op), "reference", "host", ""});
}

void doc_window_mask(const TensorView& mask, const TensorView& cu_seqlens_q,
                     const TensorView& cu_seqlens_k, const TensorView& doc_ids_q,
                     const TensorView& doc_ids_k, const TensorView& valid_q,
                     const TensorView& valid_k, bool causal, int64_t window_left,
                     int64_t window_right) {
  constexpr std::string_view op = "doc_window_mask";
  const std::vector<int32_t> cu_q = seqlens(op, "cu_seqlens_q", cu_seqlens_q);
  const std::vector<int32_t> cu_k = seqlens(op, "cu_seqlens_k", cu_seqlens_k);
  if (cu_q.size() != cu_k.size()) {
    throw_arg_error(op, "cu_seqlens_k", "B + 1 = " + std::to_string(cu_q.size()) + " offsets",
                    std::to_string(cu_k.size()));
  }
  const std::vector<int32_t> vq = attention_metadata::valid_lengths(op, "valid_q", valid_q, cu_q);
  const std::vector<int32_t> vk = attention_metadata::valid_lengths(op, "valid_k", valid_k, cu_k);
  if (doc_ids_q.defined() != doc_ids_k.defined()) {
    throw_arg_error(op, doc_ids_q.defined() ? "doc_ids_k" : "doc_ids_q",
                    "both document id tensors or neither", "only one");
  }
  std::vector<int32_t> dq, dk;
  if (doc_ids_q.defined()) {
    dq = int32_vector(op, "doc_ids_q", doc_ids_q, cu_q.back());
    dk = int32_vector(op, "doc_ids_k", doc_ids_k, cu_k.back());
  }
  check::present(op, "mask", mask);
  on_cpu(op, "mask", mask);
  check::dtype_in(op, "mask", mask, {DType::boolean});
  if (mask.rank != 2 || mask.size(0) != cu_q.back() || mask.size(1) != cu_k.back()) {
    throw_arg_error(op, "mask",
                    "[total_q, total_k] = [" + std::to_string(cu_q.back()) + ", " +
                        std::to_string(cu_k.back()) + "]",
                    mask.shape_str());
  }
  auto* m = static_cast<uint8_t*>(mask.data);
  for (int64_t tq = 0; tq < cu_q.back(); ++tq) {
    for (int64_t tk = 0; tk < cu_k.back(); ++tk) m[tq * mask.stride(0) + tk * mask.stride(1)] = 0;
  }
  const attention::MaskRules rules{causal, window_left, window_right};
  for (size_t b = 0; b + 1 < cu_q.size(); ++b) {
    const attention::SequenceShape s{cu_q[b + 1] - cu_q[b], cu_k[b + 1] - cu_k[b], vq[b], vk[b]};
    for (int64_t i = 0; i < s.lq; ++i) {
      for (int64_t j = 0; j < s.lk; ++j) {
        const int64_t tq = cu_q[b] + i, tk = cu_k[b] + j;
        const bool on =
            attention::visible(rules, s, i, j, dq.empty() ? 0 : dq[tq], dk.empty() ? 0 : dk[tk]);
        m[tq * mask.stride(0) + tk * mask.stride(1)] = on;
      }
    }
  }
  record_receipt({std::string(op), "reference", "host", ""});
}

}  // namespace kiln
