// Host-side core pieces: TensorView, element conversions, receipts, launch configs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "core/check.h"
#include "core/dispatch.h"
#include "core/element.h"
#include "cuda/common/row_shape.h"
#include "cuda/norm/norm_config.h"
#include "kiln/core/core.h"

namespace kiln {
namespace {

TEST(TensorView, ContiguousStridesAndDescribe) {
  TensorView t(nullptr, DType::bf16, Device::cuda(1), {2, 3, 4});
  EXPECT_EQ(t.stride(0), 12);
  EXPECT_EQ(t.stride(-1), 1);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.describe(), "bf16[2, 3, 4] cuda:1");
  EXPECT_FALSE(TensorView().defined());
}

TEST(TensorView, RowsOfCollapsesLeadingDims) {
  const int64_t sizes[] = {2, 3, 8}, strides[] = {3 * 40, 40, 1};
  TensorView t(nullptr, DType::f32, Device::cpu(), sizes, strides);
  const check::RowMatrix m = check::rows_of("op", "t", t);
  EXPECT_EQ(m.rows, 6);
  EXPECT_EQ(m.cols, 8);
  EXPECT_EQ(m.row_stride, 40);
}

TEST(TensorView, RowsOfEmptyTensorIgnoresStrides) {
  // An expanded gradient of an empty tensor: stride 0 everywhere, nothing addressed.
  const int64_t sizes[] = {0, 8}, strides[] = {0, 0};
  TensorView t(nullptr, DType::bf16, Device::cpu(), sizes, strides);
  const check::RowMatrix m = check::rows_of("op", "t", t);
  EXPECT_EQ(m.rows, 0);
  EXPECT_EQ(m.cols, 8);
}

TEST(Element, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties to even (1).
  EXPECT_EQ(element::bf16_to_float(element::float_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  EXPECT_EQ(element::bf16_to_float(element::float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))),
            1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(element::bf16_to_float(element::float_to_bf16(NAN))));
}

TEST(Element, F16RoundTripAndLimits) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f}) {
    EXPECT_EQ(element::f16_to_float(element::float_to_f16(v)), v) << v;
  }
  EXPECT_TRUE(std::isinf(element::f16_to_float(element::float_to_f16(70000.0f))));
}

TEST(Element, Fp8SaturatesAndKeepsNan) {
  EXPECT_EQ(element::e4m3_to_float(element::float_to_e4m3(1000.0f)), 448.0f);
  EXPECT_EQ(element::e4m3_to_float(element::float_to_e4m3(-1000.0f)), -448.0f);
  EXPECT_EQ(element::e4m3_to_float(element::float_to_e4m3(0.3f)), 0.3125f);
  EXPECT_TRUE(std::isnan(element::e4m3_to_float(element::float_to_e4m3(NAN))));
  EXPECT_EQ(element::e5m2_to_float(element::float_to_e5m2(1e6f)), 57344.0f);
  EXPECT_EQ(element::e4m3_to_float(element::float_to_e4m3(std::ldexp(1.0f, -9))),
            std::ldexp(1.0f, -9));  // smallest subnormal
}

// The encoders against their definition: the nearest code by search, ties to the even code
// (mantissa LSB 0), saturating at the largest finite code; every code and every midpoint between
// neighbouring codes, and random values over both formats' ranges.
uint8_t nearest_code(double a, float (*decode)(uint8_t), int max_code) {
  if (a >= decode(static_cast<uint8_t>(max_code))) return static_cast<uint8_t>(max_code);
  int best = 0;
  for (int c = 1; c <= max_code; ++c) {
    const double d = std::fabs(decode(static_cast<uint8_t>(c)) - a);
    const double db = std::fabs(decode(static_cast<uint8_t>(best)) - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return static_cast<uint8_t>(best);
}

TEST(Element, Fp8EncodersPickTheNearestCode) {
  struct Format {
    float (*decode)(uint8_t);
    uint8_t (*encode)(float);
    int max_code;
  };
  for (const Format& f : {Format{element::e4m3_to_float, element::float_to_e4m3, 0x7e},
                          Format{element::e5m2_to_float, element::float_to_e5m2, 0x7b}}) {
    std::vector<double> probes;
    for (int c = 0; c <= f.max_code; ++c) {
      probes.push_back(f.decode(static_cast<uint8_t>(c)));
      if (c < f.max_code) {
        probes.push_back(
            0.5 * (f.decode(static_cast<uint8_t>(c)) + f.decode(static_cast<uint8_t>(c + 1))));
      }
    }
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> log2a(-20.0, 17.0);
    for (int i = 0; i < 20000; ++i) probes.push_back(static_cast<float>(std::exp2(log2a(rng))));
    for (double tiny : {1e-40, 1e-30, 3e-3, 57344.0 * 1.0625, 1e30}) probes.push_back(tiny);
    for (double a : probes) {
      const uint8_t want = nearest_code(a, f.decode, f.max_code);
      EXPECT_EQ(f.encode(static_cast<float>(a)), want) << a;
      EXPECT_EQ(f.encode(static_cast<float>(-a)), want | 0x80) << -a;
    }
  }
}

TEST(Receipt, LastReceiptIsThreadLocalAndPrintable) {
  record_receipt({"op_a", "reference", "v1", "asked for x"});
  EXPECT_EQ(last_receipt().op, "op_a");
  EXPECT_EQ(last_receipt().str(), "op_a backend=reference variant=v1 note=\"asked for x\"");
}

TEST(Dispatch, PicksTheCompileTimeValueOrNamesTheMissingOne) {
  int seen = -1;
  dispatch_value<1, 2, 4, 0>(4, "vecs", [&](auto v) { seen = decltype(v)::value; });
  EXPECT_EQ(seen, 4);
  try {
    dispatch_value<DType::f32, DType::bf16>(DType::i64, "rms_norm x", [](auto) {});
    FAIL() << "no kiln::Error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rms_norm x: no kernel instantiated for i64");
  }
}

TEST(NormConfig, ForwardShapesAtModelSizes) {
  // bf16 aligned: 8 elements a vector; N = 8192 -> 1024 vectors -> 512 threads x 2.
  cuda::NormConfig c = cuda::norm_forward_config(16384, 8192, 2, true);
  EXPECT_EQ(c.vec_width, 8);
  EXPECT_EQ(c.threads_per_row, 512);
  EXPECT_EQ(c.vecs_per_thread, 2);
  EXPECT_EQ(c.rows_per_block, 1);
  // N = 4096 -> 512 vectors: wider than 256 accesses, so 256 threads x 2, one row a block.
  c = cuda::norm_forward_config(16384, 4096, 2, true);
  EXPECT_EQ(c.threads_per_row, 256);
  EXPECT_EQ(c.vecs_per_thread, 2);
  EXPECT_EQ(c.rows_per_block, 1);
  // N = 2048 -> 256 vectors: one access a thread, one row a 256-thread block.
  c = cuda::norm_forward_config(16384, 2048, 2, true);
  EXPECT_EQ(c.threads_per_row, 256);
  EXPECT_EQ(c.vecs_per_thread, 1);
  EXPECT_EQ(c.rows_per_block, 1);
  EXPECT_EQ(c.grid, 16384);
  // The lab knobs: one access a thread and 512-thread blocks (the s9 shape); past the launch
  // bounds, clamped to 512.
  c = cuda::norm_forward_config(16384, 4096, 2, true, 1, 512);
  EXPECT_EQ(c.threads_per_row, 512);
  EXPECT_EQ(c.vecs_per_thread, 1);
  c = cuda::norm_forward_config(16384, 2048, 2, true, 1, 512);
  EXPECT_EQ(c.rows_per_block, 2);
  EXPECT_EQ(c.grid, 8192);
  EXPECT_EQ(cuda::norm_forward_config(16384, 2048, 2, true, 1, 4096).rows_per_block, 2);
  // N = 512: 64 vectors, 64 threads a row, four rows a block.
  EXPECT_EQ(cuda::norm_forward_config(100, 512, 2, true).rows_per_block, 4);
  // N = 1: one warp per row, eight rows a block.
  c = cuda::norm_forward_config(3, 1, 2, false);
  EXPECT_EQ(c.threads_per_row, 32);
  EXPECT_EQ(c.vecs_per_thread, 1);
  EXPECT_EQ(c.grid, 1);
  // Too wide for registers: streaming.
  EXPECT_EQ(cuda::norm_forward_config(4, 1 << 20, 2, true).vecs_per_thread, 0);
}

TEST(NormConfig, EveryRowFitsItsThreads) {
  for (int64_t cols : {1, 7, 64, 4095, 4096, 8192, 16384, 65536}) {
    for (int elem : {2, 4}) {
      for (bool aligned : {false, true}) {
        for (const cuda::NormConfig& c :
             {cuda::norm_forward_config(1000, cols, elem, aligned),
              cuda::norm_backward_config(1000, cols, elem, aligned, 132, 2)}) {
          EXPECT_EQ(c.threads() % 32, 0);
          EXPECT_LE(c.threads(), cuda::kNormBackwardThreads);
          if (c.vecs_per_thread > 0) {
            EXPECT_GE(int64_t{c.threads_per_row} * c.vecs_per_thread * c.vec_width, cols);
          }
        }
      }
    }
  }
}

TEST(NormConfig, BackwardGridIsPersistentAndBounded) {
  const cuda::NormConfig c = cuda::norm_backward_config(16384, 8192, 2, true, 132, 1);
  EXPECT_EQ(c.grid, 132);
  EXPECT_LE(c.grid * c.rows_per_block, cuda::norm_backward_max_slots(16384, 8192, 132));
  EXPECT_EQ(cuda::norm_backward_config(3, 64, 2, true, 132, 8).grid, 1);
}

// One block a token (moe_sum's dweights, mhc_post_mix): whole warps, every thread the same
// number of accesses where the row allows, one warp for an empty row.
TEST(TokenBlockThreads, EvenAccessesAtModelSizes) {
  using cuda::token_block_threads;
  EXPECT_EQ(token_block_threads(8192, 8), 256);  // 1024 accesses: 4 rounds of 256
  EXPECT_EQ(token_block_threads(7168, 8), 224);  // 896 = 4 x 224
  EXPECT_EQ(token_block_threads(4095, 1), 256);  // 4095 = 16 rounds of 255.9: the last thread short
  EXPECT_EQ(token_block_threads(64, 8), 32);
  EXPECT_EQ(token_block_threads(1, 1), 32);
  EXPECT_EQ(token_block_threads(0, 8), 32);
}

// The row launch's shape: a row's accesses over a power of two of threads up to the block, the
// block's other threads on further rows, rows past 65535 blocks walked by a loop.
TEST(RowShape, BlockSizeSplitsRowsAndAccesses) {
  using cuda::row_shape;
  cuda::RowShape s = row_shape(16384, 8192, 8);  // 1024 accesses a row, blocks of 256
  EXPECT_EQ(s.threads_per_row, 256);
  EXPECT_EQ(s.rows_per_block, 1);
  EXPECT_EQ(s.blocks_x, 4);
  EXPECT_EQ(s.blocks_y, 16384);
  s = row_shape(16384, 8192, 8, 0, 128);  // dequantize's blocks of 128
  EXPECT_EQ(s.threads_per_row, 128);
  EXPECT_EQ(s.blocks_x, 8);
  EXPECT_EQ(s.blocks_y, 16384);
  s = row_shape(1000, 64, 8, 0, 128);  // 8 accesses a row: a warp a row, 4 rows a block
  EXPECT_EQ(s.threads_per_row, 32);
  EXPECT_EQ(s.rows_per_block, 4);
  EXPECT_EQ(s.blocks_y, 250);
  s = row_shape(1 << 20, 8192, 8, 0, 128);
  EXPECT_EQ(s.blocks_y, 65535);  // the rest by the kernel's loop
}

}  // namespace
}  // namespace kiln
