// attention_validity and doc_window_mask (host ops): hand-worked masks for causality
// (bottom-right), windows and documents, the metadata normalisation, and every bad input's message.
#include "kiln/ops/attention_mask.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/expect_error.h"

namespace kiln {
namespace {

TensorView i32(std::vector<int32_t>& v) {
  return TensorView(v.data(), DType::i32, Device::cpu(), {static_cast<int64_t>(v.size())});
}

struct Mask {
  std::vector<int32_t> cu_q, cu_k, doc_q, doc_k;
  std::string run(bool causal, int64_t left, int64_t right) {
    const int64_t tq = cu_q.back(), tk = cu_k.back();
    std::vector<uint8_t> m(tq * tk, 7);  // poisoned
    doc_window_mask(TensorView(m.data(), DType::boolean, Device::cpu(), {tq, tk}), i32(cu_q),
                    i32(cu_k), doc_q.empty() ? TensorView() : i32(doc_q),
                    doc_k.empty() ? TensorView() : i32(doc_k), {}, {}, causal, left, right);
    std::string out;
    for (int64_t r = 0; r < tq; ++r) {
      for (int64_t c = 0; c < tk; ++c) out += m[r * tk + c] == 1 ? '1' : m[r * tk + c] ? '?' : '0';
      out += r + 1 < tq ? "|" : "";
    }
    return out;
  }
};

TEST(DocWindowMask, CausalWindowAndDocuments) {
  // Two sequences: 2 queries over 3 keys, 1 query over 2 keys (queries are the last positions).
  Mask m{{0, 2, 3}, {0, 3, 5}, {}, {}};
  EXPECT_EQ(m.run(true, -1, -1), "11000|11100|00011");
  EXPECT_EQ(m.run(true, 0, -1), "01000|00100|00001");
  EXPECT_EQ(m.run(false, -1, -1), "11100|11100|00011");
  m.doc_q = {0, 1, 5};
  m.doc_k = {0, 0, 1, 5, 5};
  EXPECT_EQ(m.run(true, -1, -1), "11000|00100|00011");
}

TEST(AttentionValidity, TokenPrefixSlotMaskAndBoth) {
  std::vector<int32_t> cu{0, 3, 3, 7}, prefix{2, 0, 4}, out(3, -1);
  attention_validity(i32(out), i32(cu), i32(prefix), {});
  EXPECT_EQ(out, (std::vector<int32_t>{2, 0, 4}));
  std::vector<uint8_t> slots{1, 1, 0, 1, 1, 1, 1};
  const TensorView slot_view(slots.data(), DType::u8, Device::cpu(), {7});
  out.assign(3, -1);
  attention_validity(i32(out), i32(cu), {}, slot_view);
  EXPECT_EQ(out, (std::vector<int32_t>{2, 0, 4}));
  out.assign(3, -1);
  attention_validity(i32(out), i32(cu), i32(prefix), slot_view);
  EXPECT_EQ(out, (std::vector<int32_t>{2, 0, 4}));
  out.assign(3, -1);
  attention_validity(i32(out), i32(cu), {}, {});
  EXPECT_EQ(out, (std::vector<int32_t>{3, 0, 4}));
}

TEST(AttentionValidity, BadInput) {
  std::vector<int32_t> cu{0, 3, 7}, out(2), prefix{2, 5};
  testing::expect_error([&] { attention_validity(i32(out), i32(cu), i32(prefix), {}); },
                        "attention_validity: argument 'token_prefix': expected 0 <= "
                        "token_prefix[b] <= the sequence's length, got token_prefix[1] = 5, "
                        "length 4");
  std::vector<uint8_t> holes{1, 0, 1, 1, 1, 1, 1};
  const TensorView hole_view(holes.data(), DType::u8, Device::cpu(), {7});
  testing::expect_error([&] { attention_validity(i32(out), i32(cu), {}, hole_view); },
                        "argument 'slot_mask': expected the valid slots of each sequence to be a "
                        "prefix, got sequence 0: token 2 valid after an invalid one");
  std::vector<uint8_t> slots{1, 1, 1, 1, 1, 0, 0};
  std::vector<int32_t> other{2, 2};
  testing::expect_error(
      [&] {
        attention_validity(i32(out), i32(cu), i32(other),
                           TensorView(slots.data(), DType::u8, Device::cpu(), {7}));
      },
      "expected the same valid length as token_prefix, got sequence 0: 3 vs 2");
  std::vector<int32_t> backwards{0, 3, 2};
  testing::expect_error([&] { attention_validity(i32(out), i32(backwards), {}, {}); },
                        "argument 'cu_seqlens': expected non-decreasing offsets, got "
                        "cu_seqlens[2] = 2 < cu_seqlens[1] = 3");
  std::vector<int32_t> late{1, 3, 7};
  testing::expect_error([&] { attention_validity(i32(out), i32(late), {}, {}); },
                        "expected cu_seqlens[0] = 0, got 1");
  int32_t fake[3] = {0, 1, 2};
  testing::expect_error(
      [&] {
        attention_validity(i32(out), TensorView(fake, DType::i32, Device::cuda(0), {3}), {}, {});
      },
      "argument 'cu_seqlens': expected a CPU tensor");
}

TEST(DocWindowMask, BadInput) {
  std::vector<int32_t> cu_q{0, 2}, cu_k{0, 3}, cu_k2{0, 3, 4}, doc{0, 0};
  std::vector<uint8_t> m(6);
  const TensorView mask(m.data(), DType::boolean, Device::cpu(), {2, 3});
  testing::expect_error(
      [&] { doc_window_mask(mask, i32(cu_q), i32(cu_k2), {}, {}, {}, {}, true, -1, -1); },
      "doc_window_mask: argument 'cu_seqlens_k': expected B + 1 = 2 offsets, got 3");
  testing::expect_error(
      [&] { doc_window_mask(mask, i32(cu_q), i32(cu_k), i32(doc), {}, {}, {}, true, -1, -1); },
      "argument 'doc_ids_k': expected both document id tensors or neither, got only one");
  const TensorView wrong(m.data(), DType::boolean, Device::cpu(), {3, 2});
  testing::expect_error(
      [&] { doc_window_mask(wrong, i32(cu_q), i32(cu_k), {}, {}, {}, {}, true, -1, -1); },
      "argument 'mask': expected [total_q, total_k] = [2, 3]");
  std::vector<int32_t> too_long{3};
  testing::expect_error(
      [&] { doc_window_mask(mask, i32(cu_q), i32(cu_k), {}, {}, i32(too_long), {}, true, -1, -1); },
      "argument 'valid_q': expected 0 <= valid_q[b] <= the sequence's length, got valid_q[0] = "
      "3, length 2");
}

}  // namespace
}  // namespace kiln
