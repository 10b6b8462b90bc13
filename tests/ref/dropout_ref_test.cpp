// The reference bias_dropout_add: Philox against Random123's known answers, the exact add when
// unmasked, the mask's rate and determinism, the backward regenerating the forward's mask, dbias
// as column sums, stride independence, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "core/philox.h"
#include "kiln/ops/dropout.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

TEST(Philox, MatchesRandom123KnownAnswers) {
  const philox::Block zero = philox::philox4x32_10(philox::Block{{0, 0, 0, 0}}, 0, 0);
  const uint32_t want_zero[] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
  const philox::Block ones =
      philox::philox4x32_10(philox::Block{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
                            0xffffffffu, 0xffffffffu);
  const uint32_t want_ones[] = {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu};
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(zero.v[k], want_zero[k]) << k;
    EXPECT_EQ(ones.v[k], want_ones[k]) << k;
  }
}

struct Inputs {
  HostTensor x, bias, residual, out;
  Inputs(DType dtype, int64_t rows, int64_t cols, uint64_t seed)
      : x(dtype, {rows, cols}),
        bias(dtype, {cols}),
        residual(dtype, {rows, cols}),
        out(dtype, {rows, cols}) {
    std::mt19937_64 rng(seed);
    x.randn(rng);
    bias.randn(rng);
    residual.randn(rng);
  }
};

TEST(DropoutRef, UnmaskedIsTheExactAdd) {
  Inputs in(DType::f32, 3, 10, 1);
  for (auto [p, training] : {std::pair{0.0, true}, std::pair{0.5, false}}) {
    bias_dropout_add(in.out.view(), in.x.view(), in.bias.view(), in.residual.view(), p, 7, 0,
                     training);
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t c = 0; c < 10; ++c) {
        const double want = in.residual.at(r, c) + (in.x.at(r, c) + in.bias.at(0, c));
        EXPECT_EQ(in.out.at(r, c), static_cast<float>(want)) << r << "," << c;
      }
    }
  }
  EXPECT_EQ(last_receipt().op, "bias_dropout_add");
}

TEST(DropoutRef, MaskRateScaleAndDeterminism) {
  const int64_t rows = 64, cols = 1024;
  const double p = 0.3;
  Inputs in(DType::f32, rows, cols, 2);
  bias_dropout_add(in.out.view(), in.x.view(), in.bias.view(), in.residual.view(), p, 1234, 99,
                   true);
  int64_t dropped = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const double v = in.x.at(r, c) + in.bias.at(0, c);
      const bool keep = philox::uniform(1234, 99, r * cols + c) >= static_cast<float>(p);
      const double want = in.residual.at(r, c) + (keep ? v / (1 - p) : 0.0);
      EXPECT_NEAR(in.out.at(r, c), want, 1e-5 * (1 + std::abs(want)));
      dropped += !keep;
    }
  }
  // Binomial(65536, 0.3): standard deviation ~117; 6 of them.
  EXPECT_NEAR(static_cast<double>(dropped), p * rows * cols, 700.0);
  HostTensor again(DType::f32, {rows, cols}), other(DType::f32, {rows, cols});
  bias_dropout_add(again.view(), in.x.view(), in.bias.view(), in.residual.view(), p, 1234, 99,
                   true);
  EXPECT_EQ(again.bytes, in.out.bytes);
  bias_dropout_add(other.view(), in.x.view(), in.bias.view(), in.residual.view(), p, 1234, 100,
                   true);
  EXPECT_NE(other.bytes, in.out.bytes);
}

TEST(DropoutRef, BackwardRegeneratesTheForwardMaskAndSumsDbias) {
  const int64_t rows = 40, cols = 33;
  const double p = 0.25;
  // With x + bias = 1 and residual = 0 the forward's output is the mask times the scale.
  HostTensor ones(DType::f32, {rows, cols}), zeros(DType::f32, {rows, cols}),
      fwd(DType::f32, {rows, cols});
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      ones.set(r, c, 1.0);
      zeros.set(r, c, 0.0);
    }
  }
  bias_dropout_add(fwd.view(), ones.view(), TensorView(), zeros.view(), p, 5, 6, true);
  std::mt19937_64 rng(3);
  HostTensor dout(DType::f32, {rows, cols}), dx(DType::f32, {rows, cols}),
      dbias(DType::f32, {cols});
  dout.randn(rng);
  bias_dropout_add_backward(dx.view(), dbias.view(), dout.view(), p, 5, 6, true);
  for (int64_t c = 0; c < cols; ++c) {
    double sum = 0;
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_NEAR(dx.at(r, c), dout.at(r, c) * fwd.at(r, c), 1e-6) << r << "," << c;
      sum += dout.at(r, c) * fwd.at(r, c);
    }
    EXPECT_NEAR(dbias.at(0, c), sum, 1e-5 * (1 + std::abs(sum))) << c;
  }
  EXPECT_EQ(last_receipt().op, "bias_dropout_add_backward");
}

TEST(DropoutRef, MaskFollowsTheLogicalIndexNotTheStrides) {
  const int64_t rows = 5, cols = 12;
  Inputs in(DType::bf16, rows, cols, 4);
  HostTensor wide_x(DType::bf16, {rows, cols}, /*row_pitch=*/20),
      wide_out(DType::bf16, {rows, cols}, 20);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) wide_x.set(r, c, in.x.at(r, c));
  }
  bias_dropout_add(in.out.view(), in.x.view(), in.bias.view(), in.residual.view(), 0.5, 8, 9, true);
  bias_dropout_add(wide_out.view(), wide_x.view(), in.bias.view(), in.residual.view(), 0.5, 8, 9,
                   true);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(wide_out.at(r, c), in.out.at(r, c));
  }
}

TEST(DropoutRef, PEqualOneKeepsOnlyTheResidual) {
  Inputs in(DType::f32, 4, 16, 5);
  bias_dropout_add(in.out.view(), in.x.view(), in.bias.view(), in.residual.view(), 1.0, 1, 2, true);
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < 16; ++c) EXPECT_EQ(in.out.at(r, c), in.residual.at(r, c));
  }
}

TEST(DropoutRef, BadInputIsReported) {
  Inputs in(DType::bf16, 2, 8, 6);
  HostTensor short_bias(DType::bf16, {7}), f32_res(DType::f32, {2, 8});
  expect_error(
      [&] {
        bias_dropout_add(in.out.view(), in.x.view(), in.bias.view(), in.residual.view(), 1.5, 0, 0,
                         true);
      },
      "bias_dropout_add: argument 'p': expected a probability in [0, 1]");
  expect_error(
      [&] {
        bias_dropout_add(in.out.view(), in.x.view(), in.bias.view(), in.residual.view(),
                         std::nan(""), 0, 0, true);
      },
      "argument 'p'");
  expect_error(
      [&] {
        bias_dropout_add(in.out.view(), in.x.view(), short_bias.view(), in.residual.view(), 0.1, 0,
                         0, true);
      },
      "bias_dropout_add: argument 'bias'");
  expect_error(
      [&] {
        bias_dropout_add(in.out.view(), in.x.view(), in.bias.view(), f32_res.view(), 0.1, 0, 0,
                         true);
      },
      "bias_dropout_add: argument 'residual'");
  expect_error(
      [&] {
        bias_dropout_add_backward(in.out.view(), short_bias.view(), in.x.view(), 0.1, 0, 0, true);
      },
      "bias_dropout_add_backward: argument 'dbias'");
}

}  // namespace
}  // namespace kiln
