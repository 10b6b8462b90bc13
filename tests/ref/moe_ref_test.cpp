// fused_moe's reference: a hand-worked relu2 case (with and without an expert map), the same
// math composed the other way round (all tokens through each expert, then combined) for every
// activation and both dtypes, and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "core/element.h"
#include "kiln/ops/moe.h"
#include "kiln/ops/quantize.h"
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

// FP8 weights whose dequantized values bf16 holds exactly (e4m3 values on a coarse grid times
// power-of-two block scales) give the bf16 path's result to the bit; the shapes span several
// scale blocks with partial last ones (H = 200, I = 136, rows13 = 272), so every block's scale is
// used where it belongs.
TEST(MoeRef, Fp8WeightsEqualTheirDequantizedBf16Weights) {
  constexpr int64_t kT = 3, kH = 200, kI = 136, kE = 2, kK = 2, kR = 2 * kI;
  auto blocks = [](int64_t n) { return (n + 127) / 128; };
  std::mt19937_64 rng(5);
  HostTensor x(DType::bf16, {kT, kH}), w13(DType::f8e4m3, {kE, kR, kH}),
      w2(DType::f8e4m3, {kE, kH, kI}), w13_bf(DType::bf16, {kE, kR, kH}),
      w2_bf(DType::bf16, {kE, kH, kI}), s13(DType::f32, {kE, blocks(kR), blocks(kH)}),
      s2(DType::f32, {kE, blocks(kH), blocks(kI)}), out(DType::bf16, {kT, kH}),
      out_bf(DType::bf16, {kT, kH});
  x.randn(rng);
  std::uniform_int_distribution<int> level(-8, 8), power(-6, -3);
  for (HostTensor* scale : {&s13, &s2}) {
    for (int64_t r = 0; r < scale->rows(); ++r)
      for (int64_t b = 0; b < scale->cols(); ++b) scale->set(r, b, std::ldexp(1.0, power(rng)));
  }
  // Element (e, r, c) of a weight of `rows` x `cols` per expert and its scale tensor.
  auto fill = [&](HostTensor& w8, HostTensor& wbf, const HostTensor& scale, int64_t rows) {
    for (int64_t er = 0; er < w8.rows(); ++er) {
      const int64_t e = er / rows, r = er % rows;
      for (int64_t c = 0; c < w8.cols(); ++c) {
        const double v = level(rng) * 0.25;  // exact in e4m3
        w8.set(er, c, v);
        wbf.set(er, c, v * scale.at(e * blocks(rows) + r / 128, c / 128));
      }
    }
  };
  fill(w13, w13_bf, s13, kR);
  fill(w2, w2_bf, s2, kH);
  std::vector<int32_t> ids{0, 1, 1, 0, 1, 1};
  std::vector<float> weights{0.25f, 0.75f, 0.5f, 0.5f, 1.f, 0.125f};
  fused_moe(out.view(), x.view(), w13.view(), w2.view(), f32(weights, {kT, kK}), i32(ids, {kT, kK}),
            MoeActivation::swiglu, TensorView(), counter(), MoeWeightScales{s13.view(), s2.view()});
  fused_moe(out_bf.view(), x.view(), w13_bf.view(), w2_bf.view(), f32(weights, {kT, kK}),
            i32(ids, {kT, kK}), MoeActivation::swiglu, TensorView(), counter());
  EXPECT_EQ(out.bytes, out_bf.bytes);
  double norm = 0;
  for (int64_t t = 0; t < kT; ++t)
    for (int64_t h = 0; h < kH; ++h) norm += std::fabs(out.at(t, h));
  EXPECT_GT(norm, 1.0);  // not all zeros
}

// w8a8: the reference quantizes x and the intermediate (after its bf16 rounding) in 1 x 128
// groups the way quantize_fp8 does. The expert math is written out here on quantize_fp8 /
// dequantize_fp8's values (float64 dots); the reference must match it, and must not match the
// w8a16 result (the quantization changes it by far more than the tolerance). H = 200, I = 136:
// partial last groups and scale blocks.
TEST(MoeRef, W8a8QuantizesActivationsLikeQuantizeFp8) {
  constexpr int64_t kT = 3, kH = 200, kI = 136, kE = 2, kK = 2, kR = 2 * kI;
  auto blocks = [](int64_t n) { return (n + 127) / 128; };
  std::mt19937_64 rng(11);
  HostTensor x(DType::bf16, {kT, kH}), w13(DType::f8e4m3, {kE, kR, kH}),
      w2(DType::f8e4m3, {kE, kH, kI}), s13(DType::f32, {kE, blocks(kR), blocks(kH)}),
      s2(DType::f32, {kE, blocks(kH), blocks(kI)}), out(DType::bf16, {kT, kH}),
      out16(DType::bf16, {kT, kH});
  x.randn(rng);
  w13.randn(rng, 0.0, 1.0);
  w2.randn(rng, 0.0, 1.0);
  std::uniform_real_distribution<double> spread(0.5, 1.5);
  for (auto [scale, fan_in] : {std::pair{&s13, kH}, std::pair{&s2, kI}}) {
    for (int64_t r = 0; r < scale->rows(); ++r)
      for (int64_t b = 0; b < scale->cols(); ++b)
        scale->set(r, b, spread(rng) / std::sqrt(static_cast<double>(fan_in)));
  }
  std::vector<int32_t> ids{0, 1, 1, 0, 1, 1};
  std::vector<float> weights{0.25f, 0.75f, 0.5f, 0.5f, 1.f, 0.125f};
  auto run = [&](HostTensor& o, bool w8a8) {
    fused_moe(o.view(), x.view(), w13.view(), w2.view(), f32(weights, {kT, kK}),
              i32(ids, {kT, kK}), MoeActivation::swiglu, TensorView(), counter(),
              MoeWeightScales{s13.view(), s2.view(), w8a8});
  };
  run(out, true);
  run(out16, false);
  // v (a row of `dtype` values) through quantize_fp8 and dequantize_fp8, group granularity.
  auto through_fp8 = [](HostTensor& v) {
    const int64_t n = v.cols();
    HostTensor q(DType::f8e4m3, {1, n}), s(DType::f32, {1, (n + 127) / 128}),
        back(DType::f32, {1, n});
    quantize_fp8(q.view(), s.view(), v.view(), QuantConfig{});
    dequantize_fp8(back.view(), q.view(), s.view(), QuantGranularity::group);
    std::vector<double> r(n);
    for (int64_t c = 0; c < n; ++c) r[c] = back.at(0, c);
    return r;
  };
  auto w13_at = [&](int64_t e, int64_t r, int64_t h) {
    return w13.at(e * kR + r, h) * s13.at(e * blocks(kR) + r / 128, h / 128);
  };
  auto w2_at = [&](int64_t e, int64_t h, int64_t i) {
    return w2.at(e * kH + h, i) * s2.at(e * blocks(kH) + h / 128, i / 128);
  };
  double worst = 0, from16 = 0, norm = 0;
  for (int64_t t = 0; t < kT; ++t) {
    HostTensor xt(DType::bf16, {1, kH});
    for (int64_t h = 0; h < kH; ++h) xt.set(0, h, x.at(t, h));
    const std::vector<double> xq = through_fp8(xt);
    std::vector<double> want(kH, 0.0);
    for (int64_t j = 0; j < kK; ++j) {
      const int64_t e = ids[t * kK + j];
      HostTensor act(DType::bf16, {1, kI});  // rounded to bf16 as it is set
      for (int64_t i = 0; i < kI; ++i) {
        double gate = 0, up = 0;
        for (int64_t h = 0; h < kH; ++h) {
          gate += w13_at(e, i, h) * xq[h];
          up += w13_at(e, kI + i, h) * xq[h];
        }
        act.set(0, i, act::forward(act::Kind::swiglu, gate, up));
      }
      const std::vector<double> aq = through_fp8(act);
      for (int64_t h = 0; h < kH; ++h) {
        double dot = 0;
        for (int64_t i = 0; i < kI; ++i) dot += w2_at(e, h, i) * aq[i];
        want[h] += weights[t * kK + j] * dot;
      }
    }
    for (int64_t h = 0; h < kH; ++h) {
      worst = std::max(worst, std::fabs(out.at(t, h) - want[h]));
      from16 = std::max(from16, std::fabs(out16.at(t, h) - want[h]));
      norm = std::max(norm, std::fabs(want[h]));
    }
  }
  ASSERT_GT(norm, 0.5);
  EXPECT_LE(worst, 4e-3 * norm) << "w8a8 reference against the quantize_fp8 composition";
  EXPECT_GE(from16, 1.5e-2 * norm) << "w8a16 too close: the quantization is not exercised";
}

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
  // FP8 weights: both FP8, with scales of the right shape; no scales for bf16 weights.
  HostTensor w13_8(DType::f8e4m3, {3, 8, 8}), w2_8(DType::f8e4m3, {3, 8, 4}),
      s13(DType::f32, {3, 1, 1}), s2(DType::f32, {3, 1, 1}), s2_bad(DType::f32, {3, 1, 2});
  auto run8 = [&](const TensorView& w13v, const TensorView& w2v, const MoeWeightScales& s) {
    fused_moe(out.view(), x.view(), w13v, w2v, f32(weights, {2, 2}), i32(ids, {2, 2}),
              MoeActivation::swiglu, TensorView(), counter(), s);
  };
  run8(w13_8.view(), w2_8.view(), {s13.view(), s2.view()});  // valid
  expect_error(
      [&] {
        run8(w13_8.view(), w2_8.view(), {s13.view(), TensorView()});
      },
      "fused_moe: argument 'w2_scale'");
  expect_error(
      [&] {
        run8(w13_8.view(), w2_8.view(), {s13.view(), s2_bad.view()});
      },
      "fused_moe: argument 'w2_scale': expected shape [3, 1, 1], got [3, 1, 2]");
  expect_error(
      [&] {
        run8(w13.view(), w2_8.view(), {s13.view(), s2.view()});
      },
      "fused_moe: argument 'w13'");
  expect_error(
      [&] {
        run8(w13.view(), w2.view(), {s13.view(), s2.view()});
      },
      "fused_moe: argument 'w13_scale': expected absent with bf16 weights");
  expect_error(
      [&] {
        run8(w13.view(), w2.view(), {TensorView(), TensorView(), true});
      },
      "fused_moe: argument 'fp8_activations': expected f8e4m3 weights (w8a8), got bf16 weights");
  EXPECT_EQ(bad_count[0], 0);
}

}  // namespace
}  // namespace kiln
