// The reference FP8 quantization: hand-worked scales and values, saturation, NaN, all-zero
// tiles, partial last groups and blocks, the round-trip error bound of each format, layouts
// (strided rows, leading dims, MN-major scales), and every bad input's message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/quantize.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;
using G = QuantGranularity;

constexpr G kAll[] = {G::tensor, G::row, G::group, G::block};

std::vector<int64_t> scale_shape(G g, int64_t m, int64_t n) {
  const int64_t groups = (n + 127) / 128;
  switch (g) {
    case G::tensor:
      return {1};
    case G::row:
      return {m, 1};
    case G::group:
      return {m, groups};
    case G::block:
      return {(m + 127) / 128, groups};
  }
  return {};
}

struct Quantized {
  HostTensor values, scales;
};

Quantized quantize(HostTensor& x, DType fp8, G g, QuantConfig config = {}) {
  config.granularity = g;
  Quantized q{HostTensor(fp8, x.sizes), HostTensor(DType::f32, scale_shape(g, x.rows(), x.cols()))};
  quantize_fp8(q.values.view(), q.scales.view(), x.view(), config);
  return q;
}

HostTensor dequantize(Quantized& q, G g, DType dtype = DType::f32) {
  HostTensor out(dtype, q.values.sizes);
  dequantize_fp8(out.view(), q.values.view(), q.scales.view(), g);
  return out;
}

HostTensor from_rows(DType dtype, const std::vector<std::vector<double>>& rows) {
  HostTensor t(dtype, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())});
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < rows[r].size(); ++c) t.set(r, c, rows[r][c]);
  }
  return t;
}

HostTensor random_tensor(DType dtype, std::vector<int64_t> sizes, uint64_t seed,
                         double stddev = 3.0, int64_t pitch = 0) {
  HostTensor t(dtype, std::move(sizes), pitch);
  std::mt19937_64 rng(seed);
  t.randn(rng, 0.0, stddev);
  return t;
}

TEST(QuantizeRef, HandWorkedRowScales) {
  // Row 0: amax 3.5, so scale = 3.5 / 448 = 2^-7 and the values are x * 128; row 1: amax 7,
  // scale 2^-6. e5m2: 3.5 / 57344 = 2^-14.
  HostTensor x = from_rows(DType::f32, {{0.5, -1.0, 2.0, 3.5}, {7.0, 0.0, -0.25, 1.0}});
  Quantized q = quantize(x, DType::f8e4m3, G::row);
  EXPECT_EQ(q.scales.at(0, 0), std::ldexp(1.0, -7));
  EXPECT_EQ(q.scales.at(1, 0), std::ldexp(1.0, -6));
  const double want[2][4] = {{64, -128, 256, 448}, {448, 0, -16, 64}};
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 4; ++c) EXPECT_EQ(q.values.at(r, c), want[r][c]) << r << "," << c;
  }
  Quantized q5 = quantize(x, DType::f8e5m2, G::row);
  EXPECT_EQ(q5.scales.at(0, 0), std::ldexp(1.0, -14));
  const double want5[4] = {8192, -16384, 32768, 57344};
  for (int c = 0; c < 4; ++c) EXPECT_EQ(q5.values.at(0, c), want5[c]) << c;
  EXPECT_EQ(last_receipt().op, "quantize_fp8");
  EXPECT_EQ(last_receipt().backend, "reference");
}

TEST(QuantizeRef, StaticScaleSaturatesAndRounds) {
  HostTensor x = from_rows(DType::f32, {{1000.0, -1e6, 447.0, 0.001, 1e5}});
  float one = 1.f;
  const TensorView scale(&one, DType::f32, Device::cpu(), {1});
  HostTensor v4(DType::f8e4m3, {1, 5}), v5(DType::f8e5m2, {1, 5});
  quantize_fp8_static(v4.view(), x.view(), scale);
  quantize_fp8_static(v5.view(), x.view(), scale);
  // e4m3: saturate to +-448; 447 rounds to 448 (step 32); 0.001 to the smallest subnormal 2^-9.
  const double want4[5] = {448, -448, 448, std::ldexp(1.0, -9), 448};
  // e5m2: 1000 -> 1024 (step 256 above 512), 447 -> 448, 0.001 -> 2^-10 (normal: step 2^-12).
  const double want5[5] = {1024, -57344, 448, std::ldexp(1.0, -10), 57344};
  for (int c = 0; c < 5; ++c) {
    EXPECT_EQ(v4.at(0, c), want4[c]) << c;
    EXPECT_EQ(v5.at(0, c), want5[c]) << c;
  }
  EXPECT_EQ(last_receipt().op, "quantize_fp8_static");
}

TEST(QuantizeRef, AmaxCeilingBoundsTheScale) {
  HostTensor x = from_rows(DType::f32, {{10.0, -1000.0, 50.0}});
  QuantConfig config;
  config.amax_ceiling = 100.f;
  Quantized q = quantize(x, DType::f8e4m3, G::row, config);
  EXPECT_EQ(q.scales.at(0, 0), 100.f / 448.f);
  EXPECT_EQ(q.values.at(0, 1), -448);                   // 1000 / (100 / 448) saturates
  EXPECT_EQ(q.values.at(0, 2), 224);                    // 50 * 4.48 = 224 exactly
  EXPECT_NEAR(q.values.at(0, 0), 44.8, 44.8 / 16 + 0);  // within half an e4m3 step
}

TEST(QuantizeRef, NanStaysNanAndDoesNotEnterTheScale) {
  for (G g : kAll) {
    for (DType fp8 : {DType::f8e4m3, DType::f8e5m2}) {
      HostTensor x = random_tensor(DType::bf16, {3, 200}, 7);
      x.set(1, 5, NAN);
      Quantized q = quantize(x, fp8, g);
      EXPECT_TRUE(std::isnan(q.values.at(1, 5))) << granularity_name(g);
      for (int64_t i = 0; i < q.scales.numel(); ++i) {
        const float s = reinterpret_cast<const float*>(q.scales.bytes.data())[i];
        EXPECT_TRUE(std::isfinite(s) && s > 0) << granularity_name(g) << " scale " << i;
      }
      // Every other element is finite and the tile's largest |x| lands on +-fp8_max.
      HostTensor back = dequantize(q, g);
      for (int64_t r = 0; r < 3; ++r) {
        for (int64_t c = 0; c < 200; ++c) {
          if (r == 1 && c == 5) continue;
          EXPECT_TRUE(std::isfinite(back.at(r, c))) << r << "," << c;
        }
      }
    }
  }
}

TEST(QuantizeRef, ZeroTilesGetTheFloorScaleAndStayZero) {
  HostTensor x = random_tensor(DType::bf16, {4, 300}, 3);
  for (int64_t c = 0; c < 300; ++c) x.set(2, c, c % 2 ? 0.0 : -0.0);  // an all-zero row
  for (int64_t c = 128; c < 256; ++c) x.set(0, c, 0.0);               // an all-zero group
  for (DType fp8 : {DType::f8e4m3, DType::f8e5m2}) {
    const float floor_scale = 1e-4f / (fp8 == DType::f8e4m3 ? 448.f : 57344.f);
    Quantized row = quantize(x, fp8, G::row), group = quantize(x, fp8, G::group);
    EXPECT_EQ(row.scales.at(2, 0), floor_scale);
    EXPECT_EQ(group.scales.at(2, 1), floor_scale);
    EXPECT_EQ(group.scales.at(0, 1), floor_scale);
    for (int64_t c = 0; c < 300; ++c) {
      EXPECT_EQ(row.values.bytes[2 * 300 + c], c % 2 ? 0x00 : 0x80) << c;  // -0 keeps its sign
    }
    HostTensor back = dequantize(group, G::group);
    for (int64_t c = 128; c < 256; ++c) EXPECT_EQ(back.at(0, c), 0.0);
  }
  // An empty tensor still gets its per-tensor scale.
  HostTensor empty(DType::bf16, {0, 16});
  Quantized q = quantize(empty, DType::f8e4m3, G::tensor);
  EXPECT_EQ(q.scales.at(0, 0), 1e-4f / 448.f);
}

TEST(QuantizeRef, PartialLastGroupAndBlockHaveTheirOwnScales) {
  // M = 130, N = 257: groups of 128, 128 and 1; blocks of 128 or 2 rows by 128, 128 or 1 columns.
  HostTensor x = random_tensor(DType::bf16, {130, 257}, 11);
  x.set(129, 256, 40.0);  // the lone last block's only element in its last row
  for (G g : {G::group, G::block}) {
    Quantized q = quantize(x, DType::f8e4m3, g);
    const int64_t tr = g == G::block ? 128 : 1;
    for (int64_t i = 0; i < q.scales.rows(); ++i) {
      for (int64_t j = 0; j < 3; ++j) {
        double amax = 0;
        int64_t ar = 0, ac = 0;
        for (int64_t r = i * tr; r < std::min<int64_t>(130, (i + 1) * tr); ++r) {
          for (int64_t c = j * 128; c < std::min<int64_t>(257, (j + 1) * 128); ++c) {
            if (std::fabs(x.at(r, c)) > amax) amax = std::fabs(x.at(r, c)), ar = r, ac = c;
          }
        }
        ASSERT_EQ(q.scales.at(i, j), static_cast<float>(amax) / 448.f) << i << "," << j;
        EXPECT_EQ(std::fabs(q.values.at(ar, ac)), 448.0) << i << "," << j;
      }
    }
  }
}

// |dequant(quant(x)) - x| within half an fp8 step of the scaled value: 2^-(m+1) relative for
// normal values, half the smallest subnormal absolute, times the scale (plus fp32 rounding).
TEST(QuantizeRef, RoundTripErrorIsHalfAStep) {
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (DType fp8 : {DType::f8e4m3, DType::f8e5m2}) {
      const double rel = fp8 == DType::f8e4m3 ? 1.0 / 16 : 1.0 / 8;
      const double sub = fp8 == DType::f8e4m3 ? std::ldexp(1.0, -10) : std::ldexp(1.0, -17);
      for (G g : kAll) {
        HostTensor x = random_tensor(dtype, {5, 300}, 13);
        Quantized q = quantize(x, fp8, g);
        HostTensor back = dequantize(q, g);
        for (int64_t r = 0; r < 5; ++r) {
          for (int64_t c = 0; c < 300; ++c) {
            const double s = g == G::tensor  ? q.scales.at(0, 0)
                             : g == G::row   ? q.scales.at(r, 0)
                             : g == G::group ? q.scales.at(r, c / 128)
                                             : q.scales.at(0, c / 128);
            const double bound = (std::fabs(x.at(r, c)) * rel + s * sub) * (1 + 1e-6);
            ASSERT_LE(std::fabs(back.at(r, c) - x.at(r, c)), bound)
                << dtype_name(dtype) << " " << dtype_name(fp8) << " " << granularity_name(g) << " ("
                << r << ", " << c << ")";
          }
        }
      }
    }
  }
}

TEST(QuantizeRef, DynamicTensorScaleMatchesStaticWithThatScale) {
  HostTensor x = random_tensor(DType::bf16, {7, 333}, 17);
  Quantized dyn = quantize(x, DType::f8e4m3, G::tensor);
  HostTensor values(DType::f8e4m3, {7, 333});
  quantize_fp8_static(values.view(), x.view(), dyn.scales.view());
  EXPECT_EQ(values.bytes, dyn.values.bytes);
}

TEST(QuantizeRef, StridedRowsLeadingDimsAndMnMajorScalesAgree) {
  const int64_t m = 6, n = 300, groups = 3, m4 = 8;
  HostTensor dense = random_tensor(DType::f16, {m, n}, 19);
  HostTensor strided(DType::f16, {m, n}, n + 5);  // rows 305 apart, the pad poisoned
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < n; ++c) strided.set(r, c, dense.at(r, c));
  }
  Quantized want = quantize(dense, DType::f8e5m2, G::group);
  Quantized got = quantize(strided, DType::f8e5m2, G::group);
  EXPECT_EQ(got.values.bytes, want.values.bytes);
  EXPECT_EQ(got.scales.bytes, want.scales.bytes);
  // x [2, 3, N] with scales [2, 3, G].
  HostTensor x3 = dense;
  x3.sizes = {2, 3, n};
  HostTensor v3(DType::f8e5m2, {2, 3, n}), s3(DType::f32, {2, 3, groups});
  QuantConfig config;
  quantize_fp8(v3.view(), s3.view(), x3.view(), config);
  EXPECT_EQ(v3.bytes, want.values.bytes);
  EXPECT_EQ(s3.bytes, want.scales.bytes);
  // MN-major: the [M, G] view of a [G, M4] buffer (strides [1, M4]).
  std::vector<float> mn(groups * m4, -1.f);
  const int64_t sizes[2] = {m, groups}, strides[2] = {1, m4};
  const TensorView mn_view(mn.data(), DType::f32, Device::cpu(), sizes, strides);
  HostTensor v(DType::f8e5m2, {m, n});
  quantize_fp8(v.view(), mn_view, dense.view(), config);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < groups; ++j) EXPECT_EQ(mn[j * m4 + r], want.scales.at(r, j));
  }
  EXPECT_EQ(mn[m], -1.f);  // the alignment pad is not written
  HostTensor back(DType::bf16, {m, n});
  dequantize_fp8(back.view(), v.view(), mn_view, G::group);
  HostTensor want_back = dequantize(want, G::group, DType::bf16);
  EXPECT_EQ(back.bytes, want_back.bytes);
}

TEST(QuantizeRef, DequantizeIsValueTimesScaleRounded) {
  HostTensor x = random_tensor(DType::f32, {3, 130}, 23);
  Quantized q = quantize(x, DType::f8e4m3, G::group);
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    HostTensor out = dequantize(q, G::group, dtype);
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t c = 0; c < 130; ++c) {
        HostTensor one(dtype, {1});
        one.set(
            0, 0,
            static_cast<float>(q.values.at(r, c)) * static_cast<float>(q.scales.at(r, c / 128)));
        ASSERT_EQ(out.at(r, c), one.at(0, 0)) << dtype_name(dtype) << " " << r << "," << c;
      }
    }
  }
  EXPECT_EQ(last_receipt().op, "dequantize_fp8");
}

TEST(QuantizeRef, BadInputIsReported) {
  HostTensor x = random_tensor(DType::bf16, {4, 256}, 29);
  HostTensor values(DType::f8e4m3, {4, 256}), scales(DType::f32, {4, 2});
  QuantConfig config;
  auto q = [&](const TensorView& v, const TensorView& s, const TensorView& in,
               const QuantConfig& c) { return [=] { quantize_fp8(v, s, in, c); }; };
  HostTensor i32(DType::i32, {4, 256}), bf(DType::bf16, {4, 256}), narrow(DType::f8e4m3, {4, 128});
  HostTensor s_bf(DType::bf16, {4, 2}), s_wide(DType::f32, {4, 3}), s_two(DType::f32, {2});
  HostTensor empty_n(DType::bf16, {4, 0});
  expect_error(q(values.view(), scales.view(), i32.view(), config),
               "quantize_fp8: argument 'x': expected dtype in {f32, bf16, f16}, got i32");
  expect_error(q(values.view(), scales.view(), empty_n.view(), config),
               "quantize_fp8: argument 'x': expected a last dim >= 1, got shape [4, 0]");
  expect_error(q(bf.view(), scales.view(), x.view(), config),
               "quantize_fp8: argument 'values': expected dtype in {f8e4m3, f8e5m2}, got bf16");
  expect_error(q(narrow.view(), scales.view(), x.view(), config),
               "quantize_fp8: argument 'values': expected shape [4, 256], got shape [4, 128]");
  expect_error(q(values.view(), s_bf.view(), x.view(), config),
               "quantize_fp8: argument 'scales': expected dtype in {f32}, got bf16");
  expect_error(q(values.view(), s_wide.view(), x.view(), config),
               "quantize_fp8: argument 'scales': expected shape [4, 2] (or x's leading dims + "
               "[2]) for group scales, got shape [4, 3]");
  QuantConfig block = config;
  block.granularity = G::block;
  expect_error(q(values.view(), scales.view(), x.view(), block),
               "quantize_fp8: argument 'scales': expected shape [1, 2] for block scales, got "
               "shape [4, 2]");
  QuantConfig tensor = config;
  tensor.granularity = G::tensor;
  expect_error(q(values.view(), s_two.view(), x.view(), tensor),
               "quantize_fp8: argument 'scales': expected one element ([] or [1]), got shape [2]");
  QuantConfig bad = config;
  bad.group_size = 64;
  expect_error(q(values.view(), scales.view(), x.view(), bad),
               "quantize_fp8: argument 'config.group_size': expected 128, got 64");
  bad = config;
  bad.amax_floor = 0.f;
  expect_error(q(values.view(), scales.view(), x.view(), bad),
               "quantize_fp8: argument 'config.amax_floor': expected a finite value >= 1e-30");
  bad = config;
  bad.amax_ceiling = 1e-5f;
  expect_error(q(values.view(), scales.view(), x.view(), bad),
               "quantize_fp8: argument 'config.amax_ceiling': expected a value >= amax_floor");
  // Devices differ (nothing is dereferenced before the checks).
  const TensorView on_gpu = values.view(values.bytes.data(), Device::cuda(0));
  expect_error(q(on_gpu, scales.view(), x.view(), config),
               "quantize_fp8: argument 'values': expected a tensor on cpu, got one on cuda:0");
  // A non-contiguous last dim.
  const int64_t sizes[2] = {4, 128}, strides[2] = {256, 2};
  const TensorView every_other(x.bytes.data(), DType::bf16, Device::cpu(), sizes, strides);
  expect_error(
      q(narrow.view(), scales.view(), every_other, config),
      "quantize_fp8: argument 'x': expected a contiguous last dim (stride 1), got stride 2");
  // Scales that overlap (strides [1, 1]).
  const int64_t s_sizes[2] = {4, 2}, s_strides[2] = {1, 1};
  const TensorView overlapping(scales.bytes.data(), DType::f32, Device::cpu(), s_sizes, s_strides);
  expect_error(q(values.view(), overlapping, x.view(), config),
               "quantize_fp8: argument 'scales': expected strides [>= 2, 1] (row-major) or [1, >= "
               "4] (MN-major), got strides [1, 1]");
  // Per-tensor dynamic on CUDA needs its workspace word.
  const TensorView xg = x.view(x.bytes.data(), Device::cuda(0));
  HostTensor one(DType::f32, {1});
  expect_error(q(on_gpu, one.view(one.bytes.data(), Device::cuda(0)), xg, tensor),
               "quantize_fp8: argument 'workspace': expected >= 4 bytes, got 0 bytes");
  EXPECT_EQ(quantize_fp8_workspace_size(xg, tensor), 4u);
  EXPECT_EQ(quantize_fp8_workspace_size(x.view(), tensor), 0u);
  EXPECT_EQ(quantize_fp8_workspace_size(xg, config), 0u);
  // Static scale and dequantization.
  expect_error([&] { quantize_fp8_static(values.view(), x.view(), s_bf.view()); },
               "quantize_fp8_static: argument 'scale': expected dtype in {f32}, got bf16");
  expect_error([&] { quantize_fp8_static(values.view(), x.view(), TensorView()); },
               "quantize_fp8_static: argument 'scale': expected a tensor, got absent");
  expect_error([&] { dequantize_fp8(values.view(), values.view(), scales.view(), G::group); },
               "dequantize_fp8: argument 'out': expected dtype in {f32, bf16, f16}, got f8e4m3");
  expect_error([&] { dequantize_fp8(x.view(), bf.view(), scales.view(), G::group); },
               "dequantize_fp8: argument 'values': expected dtype in {f8e4m3, f8e5m2}, got bf16");
  expect_error([&] { dequantize_fp8(bf.view(), narrow.view(), scales.view(), G::group); },
               "dequantize_fp8: argument 'out': expected shape [4, 128], got shape [4, 256]");
  expect_error([&] { dequantize_fp8(bf.view(), values.view(), scales.view(), G::row); },
               "dequantize_fp8: argument 'scales': expected shape [4, 1] (or x's leading dims + "
               "[1]) for row scales, got shape [4, 2]");
}

}  // namespace
}  // namespace kiln
