// The reference moe_sum against the math: hand-worked sums, weights absent or f32, the backward
// against the forward's linearity (exact derivatives of a weighted sum), and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/moe_sum.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

// x[t, j, n] = 10 t + j + n / 10; weights[t, j] = j + 1.
void fill(HostTensor& x, HostTensor& w, int64_t tokens, int64_t k, int64_t n) {
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t c = 0; c < n; ++c) x.set(t * k + j, c, 10.0 * t + j + c / 10.0);
      w.set(t, j, j + 1.0);
    }
  }
}

TEST(MoeSumRef, HandWorked) {
  const int64_t tokens = 2, k = 3, n = 4;
  HostTensor x(DType::f32, {tokens, k, n}), w(DType::f32, {tokens, k}),
      out(DType::f32, {tokens, n});
  fill(x, w, tokens, k, n);
  moe_sum(out.view(), x.view(), w.view());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < n; ++c) {
      // sum_j (j + 1)(10 t + j + c/10) = 6 (10 t + c/10) + (0 + 2 + 6).
      EXPECT_NEAR(out.at(t, c), 6 * (10.0 * t + c / 10.0) + 8, 1e-5) << t << "," << c;
    }
  }
  moe_sum(out.view(), x.view(), TensorView());
  EXPECT_NEAR(out.at(1, 2), 3 * (10.0 + 0.2) + 3, 1e-5);
  EXPECT_EQ(last_receipt().op, "moe_sum");
}

TEST(MoeSumRef, Bf16ValuesWithF32Weights) {
  const int64_t tokens = 3, k = 2, n = 5;
  HostTensor x(DType::bf16, {tokens, k, n}), w(DType::f32, {tokens, k}),
      out(DType::bf16, {tokens, n});
  fill(x, w, tokens, k, n);
  moe_sum(out.view(), x.view(), w.view());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < n; ++c) {
      const double want = x.at(t * k, c) * 1 + x.at(t * k + 1, c) * 2;
      EXPECT_NEAR(out.at(t, c), want, 0.01 * std::abs(want)) << t << "," << c;
    }
  }
}

TEST(MoeSumRef, BackwardIsTheExactDerivative) {
  const int64_t tokens = 4, k = 5, n = 7;
  std::mt19937_64 rng(1);
  HostTensor x(DType::f32, {tokens, k, n}), w(DType::f32, {tokens, k}),
      dout(DType::f32, {tokens, n});
  x.randn(rng);
  w.randn(rng);
  dout.randn(rng);
  HostTensor dx(DType::f32, {tokens, k, n}), dw(DType::f32, {tokens, k});
  moe_sum_backward(dx.view(), dw.view(), dout.view(), x.view(), w.view());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      double dot = 0;
      for (int64_t c = 0; c < n; ++c) {
        EXPECT_NEAR(dx.at(t * k + j, c), w.at(t, j) * dout.at(t, c), 1e-6);
        dot += dout.at(t, c) * x.at(t * k + j, c);
      }
      EXPECT_NEAR(dw.at(t, j), dot, 1e-5);
    }
  }
  EXPECT_EQ(last_receipt().op, "moe_sum_backward");
}

TEST(MoeSumRef, BadInputIsReported) {
  HostTensor x(DType::bf16, {2, 3, 8}), out(DType::bf16, {2, 8}), w(DType::bf16, {2, 3});
  HostTensor wide_k(DType::bf16, {2, 17, 8}), short_w(DType::bf16, {2, 2}),
      wrong_out(DType::bf16, {3, 8});
  HostTensor dx(DType::bf16, {2, 3, 8}), dw(DType::bf16, {2, 3}), flat(DType::bf16, {6, 8});
  expect_error([&] { moe_sum(out.view(), wide_k.view(), TensorView()); },
               "moe_sum: argument 'x': expected k = x.size(1) in [1, 16]");
  expect_error([&] { moe_sum(out.view(), x.view(), short_w.view()); },
               "moe_sum: argument 'weights': expected shape [2, 3]");
  expect_error([&] { moe_sum(wrong_out.view(), x.view(), w.view()); },
               "moe_sum: argument 'out': expected shape [2, 8]");
  expect_error([&] { moe_sum(out.view(), flat.view(), TensorView()); },
               "moe_sum: argument 'x': expected rank 3");
  expect_error([&] { moe_sum_backward(dx.view(), dw.view(), out.view(), x.view(), TensorView()); },
               "moe_sum_backward: argument 'dweights'");
}

}  // namespace
}  // namespace kiln
