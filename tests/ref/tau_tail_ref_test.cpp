// The reference tau_tail: q and v scaled by tanh(tok) + tau[pos, h] head by head, k untouched,
// out-of-range positions left alone and counted, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/tau_tail.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

TEST(TauTailRef, ScalesQAndVPerHeadAndLeavesK) {
  const int64_t tokens = 3, heads = 2, dim = 4, rows = 5;
  std::mt19937_64 rng(1);
  HostTensor qkv(DType::f32, {tokens, 3 * heads * dim}), tok(DType::f32, {tokens, 2 * heads});
  HostTensor table(DType::f32, {rows, heads});
  qkv.randn(rng);
  tok.randn(rng);
  table.randn(rng);
  const HostTensor before = qkv;
  std::vector<int64_t> pos = {4, 7, 0};  // 7 is past the table
  int32_t bad = 0;
  tau_tail(qkv.view(), tok.view(), table.view(),
           TensorView(pos.data(), DType::i64, Device::cpu(), {tokens}), heads,
           TensorView(&bad, DType::i32, Device::cpu(), {1}));
  EXPECT_EQ(bad, 1);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t d = 0; d < dim; ++d) {
        const int64_t q = h * dim + d, k = heads * dim + q, v = 2 * heads * dim + q;
        const bool ok = pos[t] < rows;
        const double tau = ok ? table.at(pos[t], h) : 0.0;
        const double sq = ok ? std::tanh(tok.at(t, h)) + tau : 1.0;
        const double sv = ok ? std::tanh(tok.at(t, heads + h)) + tau : 1.0;
        EXPECT_NEAR(qkv.at(t, q), before.at(t, q) * sq, 1e-6) << t << "," << h << "," << d;
        EXPECT_EQ(qkv.at(t, k), before.at(t, k));
        EXPECT_NEAR(qkv.at(t, v), before.at(t, v) * sv, 1e-6) << t << "," << h << "," << d;
      }
    }
  }
  EXPECT_EQ(last_receipt().op, "tau_tail");
}

TEST(TauTailRef, BadInputIsReported) {
  HostTensor qkv(DType::bf16, {2, 24}), tok(DType::bf16, {2, 4}), table(DType::f32, {8, 2});
  HostTensor short_tok(DType::bf16, {2, 3}), wide_table(DType::f32, {8, 3});
  std::vector<int32_t> pos = {0, 1};
  int32_t bad = 0;
  const TensorView p(pos.data(), DType::i32, Device::cpu(), {2});
  const TensorView b(&bad, DType::i32, Device::cpu(), {1});
  expect_error([&] { tau_tail(qkv.view(), tok.view(), table.view(), p, 5, b); },
               "tau_tail: argument 'heads'");
  expect_error([&] { tau_tail(qkv.view(), short_tok.view(), table.view(), p, 2, b); },
               "tau_tail: argument 'tok_qv_lin': expected shape [2, 4]");
  expect_error([&] { tau_tail(qkv.view(), tok.view(), wide_table.view(), p, 2, b); },
               "tau_tail: argument 'tau_pos_table'");
  int64_t bad64 = 0;
  expect_error(
      [&] {
        tau_tail(qkv.view(), tok.view(), table.view(), p, 2,
                 TensorView(&bad64, DType::i64, Device::cpu(), {1}));
      },
      "tau_tail: argument 'bad_positions'");
}

// An absent counter is a call that asks for no count: a bad position still leaves its token as
// it was.
TEST(TauTailRef, AbsentCounterCountsNothingAndStillSkipsBadPositions) {
  std::mt19937_64 rng(2);
  HostTensor qkv(DType::f32, {2, 24}), tok(DType::f32, {2, 4}), table(DType::f32, {8, 2});
  qkv.randn(rng);
  tok.randn(rng);
  table.randn(rng);
  const HostTensor before = qkv;
  std::vector<int32_t> pos = {8, 1};  // 8 is past the table
  tau_tail(qkv.view(), tok.view(), table.view(),
           TensorView(pos.data(), DType::i32, Device::cpu(), {2}), 2, TensorView());
  for (int64_t c = 0; c < 24; ++c) EXPECT_EQ(qkv.at(0, c), before.at(0, c)) << c;
  EXPECT_NE(qkv.at(1, 0), before.at(1, 0));
}

}  // namespace
}  // namespace kiln
