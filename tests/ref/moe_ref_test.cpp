// fused_moe's reference: a hand-worked relu2 case (with and without an expert map), the same
// math composed the other way round (all tokens through each expert, then combined) for every
// activation and both dtypes, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "core/element.h"
#include "kiln/ops/moe.h"
#include "ops/activation_math.h"

namespace kiln {
namespace {

using testing::HostTensor;

TensorView i32(std::vector<int32_t>& v, std::initializer_list<int64_t> sizes) {
  return TensorView(v.data(), DType::i32, Device::cpu(), sizes);
}
TensorView f32(std::vector<float>& v, std::initializer_list<int64_t> sizes) {
  return TensorView(v.data(), DType::f32, Device::cpu(), sizes);
}
// The bad-pick counter (on the CPU bad picks are errors, so it stays 0).
std::vector<int32_t> bad_count{0};
TensorView counter() {
  return i32(bad_count, {1});
}

TEST(MoeRef, HandWorkedRelu2WithAndWithoutAMap) {
  HostTensor x(DType::bf16, {1, 2}), w13(DType::bf16, {2, 1, 2}), w2(DType::bf16, {2, 2, 1}),
      out(DType::bf16, {1, 2});
  x.set(0, 0, 1), x.set(0, 1, 2);
  w13.set(0, 0, 1), w13.set(0, 1, 1);   // expert 0: h = 3, relu2 = 9
  w13.set(1, 0, -1), w13.set(1, 1, 0);  // expert 1: h = -1, relu2 = 0
  w2.set(0, 0, 1), w2.set(1, 0, 0.5);   // expert 0: [9, 4.5]
  w2.set(2, 0, 3), w2.set(3, 0, 3);     // expert 1: [0, 0]
  std::vector<int32_t> ids{0, 1};
  std::vector<float> weights{0.25f, 0.75f};
  fused_moe(out.view(), x.view(), w13.view(), w2.view(), f32(weights, {1, 2}), i32(ids, {1, 2}),
            MoeActivation::relu2, TensorView(), counter());
  EXPECT_EQ(out.at(0, 0), 2.25);
  EXPECT_EQ(out.at(0, 1), 1.125);
  std::vector<int32_t> swap{1, 0};  // global 0 -> local 1, global 1 -> local 0
  fused_moe(out.view(), x.view(), w13.view(), w2.view(), f32(weights, {1, 2}), i32(ids, {1, 2}),
            MoeActivation::relu2, i32(swap, {2}), counter());
  EXPECT_EQ(out.at(0, 0), 6.75);
  EXPECT_EQ(out.at(0, 1), 3.375);
  std::vector<int32_t> drop{-1, 0};  // global 0 is not held here: its pick is dropped
  fused_moe(out.view(), x.view(), w13.view(), w2.view(), f32(weights, {1, 2}), i32(ids, {1, 2}),
            MoeActivation::relu2, i32(drop, {2}), counter());
  EXPECT_EQ(out.at(0, 0), 6.75);
  EXPECT_EQ(out.at(0, 1), 3.375);
}

struct Case {
  DType dtype;
  MoeActivation activation;
};

class MoeRefCompose : public ::testing::TestWithParam<Case> {};

// Every token through every expert (rounding the intermediate to the dtype), then each token's
// picks combined: the contract's sum, composed in the opposite order.
TEST_P(MoeRefCompose, EqualsExpertsThenCombine) {
  const Case c = GetParam();
  constexpr int64_t kT = 7, kH = 24, kI = 16, kE = 5, kK = 3;
  const bool gated = c.activation != MoeActivation::relu2;
  const int64_t rows13 = gated ? 2 * kI : kI;
  std::mt19937_64 rng(static_cast<uint64_t>(c.activation) * 7 + (c.dtype == DType::f16));
  HostTensor x(c.dtype, {kT, kH}), w13(c.dtype, {kE, rows13, kH}), w2(c.dtype, {kE, kH, kI}),
      out(c.dtype, {kT, kH});
  x.randn(rng);
  w13.randn(rng, 0.0, 0.3);
  w2.randn(rng, 0.0, 0.3);
  std::vector<int32_t> ids(kT * kK);
  std::vector<float> weights(kT * kK);
  for (int64_t t = 0; t < kT; ++t) {
    for (int64_t j = 0; j < kK; ++j) {
      ids[t * kK + j] = static_cast<int32_t>((t * 3 + j * 2) % kE);
      weights[t * kK + j] = 0.1f + 0.2f * static_cast<float>(j);
    }
  }
  fused_moe(out.view(), x.view(), w13.view(), w2.view(), f32(weights, {kT, kK}), i32(ids, {kT, kK}),
            c.activation, TensorView(), counter());
  const act::Kind kind = c.activation == MoeActivation::swiglu      ? act::Kind::swiglu
                         : c.activation == MoeActivation::gelu_tanh ? act::Kind::gelu_tanh
                         : c.activation == MoeActivation::gelu_erf  ? act::Kind::gelu_erf
                                                                    : act::Kind::relu2;
  // y[e][t][h] for every expert and token.
  std::vector<double> y(kE * kT * kH);
  for (int64_t e = 0; e < kE; ++e) {
    for (int64_t t = 0; t < kT; ++t) {
      std::vector<double> hmid(kI);
      for (int64_t i = 0; i < kI; ++i) {
        double a = 0, b = 0;
        for (int64_t h = 0; h < kH; ++h) {
          a += w13.at(e * rows13 + i, h) * x.at(t, h);
          if (gated) b += w13.at(e * rows13 + kI + i, h) * x.at(t, h);
        }
        HostTensor r(c.dtype, {1, 1});
        r.set(0, 0, act::forward(kind, a, b));
        hmid[i] = r.at(0, 0);
      }
      for (int64_t h = 0; h < kH; ++h) {
        double s = 0;
        for (int64_t i = 0; i < kI; ++i) s += w2.at(e * kH + h, i) * hmid[i];
        y[(e * kT + t) * kH + h] = s;
      }
    }
  }
  for (int64_t t = 0; t < kT; ++t) {
    for (int64_t h = 0; h < kH; ++h) {
      double want = 0;
      for (int64_t j = 0; j < kK; ++j) {
        want += weights[t * kK + j] * y[(ids[t * kK + j] * kT + t) * kH + h];
      }
      HostTensor r(c.dtype, {1, 1});
      r.set(0, 0, want);
      EXPECT_EQ(out.at(t, h), r.at(0, 0)) << "(" << t << ", " << h << ")";
    }
  }
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  static const char* const names[] = {"swiglu", "gelu_tanh", "gelu_erf", "relu2"};
  return std::string(dtype_name(info.param.dtype)) + "_" +
         names[static_cast<int>(info.param.activation)];
}

INSTANTIATE_TEST_SUITE_P(All, MoeRefCompose,
                         ::testing::Values(Case{DType::bf16, MoeActivation::swiglu},
                                           Case{DType::bf16, MoeActivation::gelu_tanh},
                                           Case{DType::f16, MoeActivation::gelu_erf},
                                           Case{DType::bf16, MoeActivation::relu2},
                                           Case{DType::f16, MoeActivation::swiglu}),
                         case_name);

TEST(MoeRef, BadInput) {
  using testing::expect_error;
  HostTensor x(DType::bf16, {2, 8}), w13(DType::bf16, {3, 8, 8}), w2(DType::bf16, {3, 8, 4}),
      out(DType::bf16, {2, 8});
  std::vector<int32_t> ids{0, 1, 2, 3};
  std::vector<float> weights(4, 0.5f);
  auto run = [&](const TensorView& w13v, MoeActivation a, const TensorView& map) {
    fused_moe(out.view(), x.view(), w13v, w2.view(), f32(weights, {2, 2}), i32(ids, {2, 2}), a, map,
              counter());
  };
  expect_error([&] { run(w13.view(), MoeActivation::swiglu, TensorView()); },
               "fused_moe: argument 'topk_ids': expected ids in [0, 3), got topk_ids[1][1] = 3");
  ids[3] = 1;
  expect_error([&] { run(w13.view(), MoeActivation::relu2, TensorView()); },
               "fused_moe: argument 'w13': expected shape [3, 4, 8], got [3, 8, 8]");
  std::vector<int32_t> map{0, 1, 3};
  expect_error(
      [&] { run(w13.view(), MoeActivation::swiglu, i32(map, {3})); },
      "fused_moe: argument 'expert_map': expected values in [-1, 3), got expert_map[2] = 3");
  HostTensor f32x(DType::f32, {2, 8});
  expect_error(
      [&] {
        fused_moe(out.view(), f32x.view(), w13.view(), w2.view(), f32(weights, {2, 2}),
                  i32(ids, {2, 2}), MoeActivation::swiglu, TensorView(), counter());
      },
      "fused_moe: argument 'x'");
  expect_error(
      [&] {
        fused_moe(out.view(), x.view(), w13.view(nullptr, Device::cuda(0)), w2.view(),
                  f32(weights, {2, 2}), i32(ids, {2, 2}), MoeActivation::swiglu, TensorView(),
                  counter());
      },
      "fused_moe: argument 'w13': expected a tensor on cpu");
  std::vector<float> not_a_counter(1);
  expect_error(
      [&] {
        fused_moe(out.view(), x.view(), w13.view(), w2.view(), f32(weights, {2, 2}),
                  i32(ids, {2, 2}), MoeActivation::swiglu, TensorView(), f32(not_a_counter, {1}));
      },
      "fused_moe: argument 'bad_ids'");
  expect_error(
      [&] {
        fused_moe(out.view(), x.view(), w13.view(), w2.view(), f32(weights, {2, 2}),
                  i32(ids, {2, 2}), MoeActivation::swiglu, TensorView(), TensorView());
      },
      "fused_moe: argument 'bad_ids'");
  EXPECT_EQ(bad_count[0], 0);
}

}  // namespace
}  // namespace kiln
