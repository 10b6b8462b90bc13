// The reference rope against the math: hand-worked rotations, complex multiplication by
// e^(i pos theta), GPT-J as NeoX on interleaved halves, partial rotation, norms preserved, the
// backward as the inverse and the transpose, bad positions counted and passed through, strided
// views into a fused qkv buffer (GQA), and every bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <cstdint>
#include <random>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/rope.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

constexpr double kBase = 10000.0;

double theta(int64_t i, int64_t r) {
  return std::pow(kBase, -2.0 * static_cast<double>(i) / static_cast<double>(r));
}

// Plain RoPE's cache (base 10000): row p = cos(p theta_i) | sin(p theta_i), i < R/2.
HostTensor rope_cache(int64_t rows, int64_t r) {
  HostTensor c(DType::f32, {rows, r});
  rope_fill_cache(reinterpret_cast<float*>(c.bytes.data()), rows, r);
  return c;
}

// The element indices of pair i in a head.
std::pair<int64_t, int64_t> pair_of(RopeLayout layout, int64_t i, int64_t r) {
  return layout == RopeLayout::neox ? std::pair{i, i + r / 2} : std::pair{2 * i, 2 * i + 1};
}

// Head row `row` of x [T, H, D] (row = t H + h) rotated in float64: each pair as the complex
// number x1 + i x2 times e^(i sign pos theta_j); the tail [R, D) as it was.
std::vector<double> rotated(const HostTensor& x, int64_t row, int64_t r, RopeLayout layout,
                            int64_t pos, double sign = 1.0) {
  std::vector<double> out(x.cols());
  for (int64_t d = 0; d < x.cols(); ++d) out[d] = x.at(row, d);
  for (int64_t i = 0; i < r / 2; ++i) {
    const auto [a, b] = pair_of(layout, i, r);
    const std::complex<double> z = std::complex<double>(x.at(row, a), x.at(row, b)) *
                                   std::polar(1.0, sign * static_cast<double>(pos) * theta(i, r));
    out[a] = z.real();
    out[b] = z.imag();
  }
  return out;
}

TensorView i64_view(std::vector<int64_t>& v) {
  return TensorView(v.data(), DType::i64, Device::cpu(), {static_cast<int64_t>(v.size())});
}

struct Counter {
  int32_t value = 0;
  TensorView view() { return TensorView(&value, DType::i32, Device::cpu(), {1}); }
};

HostTensor random_heads(DType dtype, int64_t t, int64_t h, int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  HostTensor x(dtype, {t, h, d});
  x.randn(rng);
  return x;
}

TEST(RopeRef, HandWorkedNeoxAndGptj) {
  // Position 1: (cos, sin) = (0.6, 0.8) for pair 0 and (0, 1) for pair 1.
  HostTensor cache(DType::f32, {2, 4});
  for (int64_t c = 0; c < 4; ++c) cache.set(0, c, 0.0);
  const double row1[4] = {0.6, 0.0, 0.8, 1.0};
  for (int64_t c = 0; c < 4; ++c) cache.set(1, c, row1[c]);
  const double qv[4] = {1, 2, 3, 4}, kv[4] = {-1, 0.5, 2, -3};
  // NeoX pairs (0, 2), (1, 3); GPT-J (0, 1), (2, 3); out1 = x1 c - x2 s, out2 = x2 c + x1 s.
  const double want_q[2][4] = {{-1.8, -4, 2.6, 2}, {-1, 2, -4, 3}};
  const double want_k[2][4] = {{-2.2, 3, 0.4, 0.5}, {-1, -0.5, 3, 2}};
  for (RopeLayout layout : {RopeLayout::neox, RopeLayout::gptj}) {
    HostTensor q(DType::f32, {1, 1, 4}), k(DType::f32, {1, 1, 4});
    for (int64_t d = 0; d < 4; ++d) {
      q.set(0, d, qv[d]);
      k.set(0, d, kv[d]);
    }
    std::vector<int64_t> pos = {1};
    Counter bad;
    rope(q.view(), k.view(), q.view(), k.view(), cache.view(), i64_view(pos), layout, 4,
         bad.view());
    const int l = layout == RopeLayout::neox ? 0 : 1;
    for (int64_t d = 0; d < 4; ++d) {
      EXPECT_NEAR(q.at(0, d), want_q[l][d], 1e-6) << rope_layout_name(layout) << " q " << d;
      EXPECT_NEAR(k.at(0, d), want_k[l][d], 1e-6) << rope_layout_name(layout) << " k " << d;
    }
    EXPECT_EQ(bad.value, 0);
  }
  EXPECT_EQ(last_receipt().op, "rope");
  EXPECT_EQ(last_receipt().backend, "reference");
}

TEST(RopeRef, MatchesComplexRotationAndPreservesNorms) {
  const int64_t t = 5, hq = 3, hk = 2, d = 12, max_pos = 40;
  HostTensor cache_full = rope_cache(max_pos, d), cache_part = rope_cache(max_pos, 8);
  for (RopeLayout layout : {RopeLayout::neox, RopeLayout::gptj}) {
    for (int64_t r : {d, int64_t{8}}) {
      HostTensor q = random_heads(DType::f32, t, hq, d, 1),
                 k = random_heads(DType::f32, t, hk, d, 2);
      HostTensor qo(DType::f32, {t, hq, d}), ko(DType::f32, {t, hk, d});
      HostTensor cache = r == d ? cache_full : cache_part;
      std::vector<int64_t> pos = {0, 7, 39, 3, 7};
      Counter bad;
      rope(qo.view(), ko.view(), q.view(), k.view(), cache.view(), i64_view(pos), layout, r,
           bad.view());
      for (auto [in, out, h] : {std::tuple{&q, &qo, hq}, std::tuple{&k, &ko, hk}}) {
        for (int64_t row = 0; row < t * h; ++row) {
          const std::vector<double> want = rotated(*in, row, r, layout, pos[row / h]);
          double norm_in = 0, norm_out = 0;
          for (int64_t e = 0; e < d; ++e) {
            EXPECT_NEAR(out->at(row, e), want[e], 1e-5) << rope_layout_name(layout) << " R=" << r;
            norm_in += in->at(row, e) * in->at(row, e);
            norm_out += out->at(row, e) * out->at(row, e);
          }
          EXPECT_NEAR(std::sqrt(norm_out), std::sqrt(norm_in), 1e-5 * std::sqrt(norm_in));
        }
      }
    }
  }
}

TEST(RopeRef, LowPrecisionIsTheFloat64MathRoundedOnce) {
  const int64_t t = 4, h = 2, d = 16, max_pos = 64;
  HostTensor cache = rope_cache(max_pos, d);
  for (DType dtype : {DType::bf16, DType::f16}) {
    const int mantissa_bits = dtype == DType::bf16 ? 7 : 10;
    HostTensor q = random_heads(dtype, t, h, d, 3), k = random_heads(dtype, t, h, d, 4);
    HostTensor q0 = q;
    std::vector<int64_t> pos = {63, 1, 20, 0};
    Counter bad;
    rope(q.view(), k.view(), q.view(), k.view(), cache.view(), i64_view(pos), RopeLayout::neox, d,
         bad.view());
    for (int64_t row = 0; row < t * h; ++row) {
      const std::vector<double> want = rotated(q0, row, d, RopeLayout::neox, pos[row / h]);
      for (int64_t e = 0; e < d; ++e) {
        // Within one rounding: half an ulp of the result (plus the cache's float rounding).
        const double ulp = std::ldexp(1.0, std::ilogb(want[e]) - mantissa_bits);
        EXPECT_LE(std::abs(q.at(row, e) - want[e]), 0.5 * ulp + 1e-6)
            << dtype_name(dtype) << " row " << row << " elem " << e;
      }
    }
  }
}

TEST(RopeRef, GptjIsNeoxOnInterleavedHalves) {
  const int64_t t = 3, h = 2, d = 10, r = 8;
  HostTensor cache = rope_cache(16, r);
  HostTensor x = random_heads(DType::f32, t, h, d, 5), y(DType::f32, {t, h, d});
  // y = x with each head's rotated part de-interleaved: y[i] = x[2i], y[i + R/2] = x[2i + 1].
  for (int64_t row = 0; row < t * h; ++row) {
    for (int64_t e = 0; e < d; ++e) y.set(row, e, x.at(row, e));
    for (int64_t i = 0; i < r / 2; ++i) {
      y.set(row, i, x.at(row, 2 * i));
      y.set(row, r / 2 + i, x.at(row, 2 * i + 1));
    }
  }
  std::vector<int64_t> pos = {2, 15, 9};
  Counter bad;
  HostTensor none(DType::f32, {t, 0, d});
  rope(x.view(), none.view(), x.view(), none.view(), cache.view(), i64_view(pos), RopeLayout::gptj,
       r, bad.view());
  rope(y.view(), none.view(), y.view(), none.view(), cache.view(), i64_view(pos), RopeLayout::neox,
       r, bad.view());
  for (int64_t row = 0; row < t * h; ++row) {
    for (int64_t i = 0; i < r / 2; ++i) {
      EXPECT_EQ(x.at(row, 2 * i), y.at(row, i));
      EXPECT_EQ(x.at(row, 2 * i + 1), y.at(row, r / 2 + i));
    }
    for (int64_t e = r; e < d; ++e) EXPECT_EQ(x.at(row, e), y.at(row, e));
  }
}

TEST(RopeRef, PartialRotationLeavesOrCopiesTheTail) {
  const int64_t t = 3, h = 2, d = 10, r = 4;
  HostTensor cache = rope_cache(8, r);
  std::vector<int64_t> pos = {5, 1, 7};
  for (RopeLayout layout : {RopeLayout::neox, RopeLayout::gptj}) {
    HostTensor x0 = random_heads(DType::bf16, t, h, d, 6);
    HostTensor in_place = x0, k = random_heads(DType::bf16, t, 1, d, 7);
    HostTensor out(DType::bf16, {t, h, d}), k_out(DType::bf16, {t, 1, d});  // NaN-filled
    HostTensor src = x0;
    Counter bad;
    rope(in_place.view(), k.view(), in_place.view(), k.view(), cache.view(), i64_view(pos), layout,
         r, bad.view());
    HostTensor k_src = random_heads(DType::bf16, t, 1, d, 7);
    rope(out.view(), k_out.view(), src.view(), k_src.view(), cache.view(), i64_view(pos), layout, r,
         bad.view());
    EXPECT_EQ(src.bytes, x0.bytes) << "out of place must not write its input";
    EXPECT_EQ(out.bytes, in_place.bytes) << "in place and out of place agree";
    EXPECT_EQ(k_out.bytes, k.bytes);
    for (int64_t row = 0; row < t * h; ++row) {
      for (int64_t e = r; e < d; ++e) EXPECT_EQ(out.at(row, e), x0.at(row, e));
    }
  }
}

TEST(RopeRef, BackwardIsTheInverseAndTheTranspose) {
  const int64_t t = 4, hq = 2, hk = 1, d = 16, r = 12;
  HostTensor cache = rope_cache(32, r);
  std::vector<int64_t> pos = {31, 0, 17, 4};
  for (RopeLayout layout : {RopeLayout::neox, RopeLayout::gptj}) {
    HostTensor q = random_heads(DType::f32, t, hq, d, 8), k = random_heads(DType::f32, t, hk, d, 9);
    HostTensor q_copy = q, k_copy = k;
    HostTensor qr(DType::f32, {t, hq, d}), kr(DType::f32, {t, hk, d});
    Counter bad;
    rope(qr.view(), kr.view(), q_copy.view(), k_copy.view(), cache.view(), i64_view(pos), layout, r,
         bad.view());
    // Inverse: rope_backward(rope(x)) = x, in place on the rotated copies.
    HostTensor back_q = qr, back_k = kr;
    rope_backward(back_q.view(), back_k.view(), back_q.view(), back_k.view(), cache.view(),
                  i64_view(pos), layout, r, bad.view());
    EXPECT_EQ(last_receipt().op, "rope_backward");
    EXPECT_EQ(last_receipt().variant, "ref::rope_backward");
    for (int64_t row = 0; row < t * hq; ++row) {
      for (int64_t e = 0; e < d; ++e) EXPECT_NEAR(back_q.at(row, e), q.at(row, e), 1e-5);
    }
    for (int64_t row = 0; row < t * hk; ++row) {
      for (int64_t e = 0; e < d; ++e) EXPECT_NEAR(back_k.at(row, e), k.at(row, e), 1e-5);
    }
    // Transpose: <g, rope(x)> = <rope_backward(g), x> for random g.
    HostTensor gq = random_heads(DType::f32, t, hq, d, 10),
               gk = random_heads(DType::f32, t, hk, d, 11);
    HostTensor dq(DType::f32, {t, hq, d}), dk(DType::f32, {t, hk, d});
    rope_backward(dq.view(), dk.view(), gq.view(), gk.view(), cache.view(), i64_view(pos), layout,
                  r, bad.view());
    double lhs = 0, rhs = 0;
    for (int64_t row = 0; row < t * hq; ++row) {
      for (int64_t e = 0; e < d; ++e) {
        lhs += gq.at(row, e) * qr.at(row, e);
        rhs += dq.at(row, e) * q.at(row, e);
      }
    }
    for (int64_t row = 0; row < t * hk; ++row) {
      for (int64_t e = 0; e < d; ++e) {
        lhs += gk.at(row, e) * kr.at(row, e);
        rhs += dk.at(row, e) * k.at(row, e);
      }
    }
    EXPECT_NEAR(lhs, rhs, 1e-4 * (1 + std::abs(lhs)));
    EXPECT_EQ(bad.value, 0);
  }
}

TEST(RopeRef, BadPositionsAreCountedAndPassedThrough) {
  const int64_t t = 6, hq = 2, hk = 1, d = 8, max_pos = 10;
  HostTensor cache = rope_cache(max_pos, d);
  std::vector<int64_t> pos = {-1, 3, 10, 2, int64_t{1} << 40, 9};  // no 0: the identity
  const std::vector<bool> bad_token = {true, false, true, false, true, false};
  HostTensor q0 = random_heads(DType::f16, t, hq, d, 12),
             k0 = random_heads(DType::f16, t, hk, d, 13);
  HostTensor q = q0, k = k0, qo(DType::f16, {t, hq, d}), ko(DType::f16, {t, hk, d});
  Counter bad;
  rope(q.view(), k.view(), q.view(), k.view(), cache.view(), i64_view(pos), RopeLayout::gptj, d,
       bad.view());
  EXPECT_EQ(bad.value, 3);
  rope(qo.view(), ko.view(), q0.view(), k0.view(), cache.view(), i64_view(pos), RopeLayout::gptj, d,
       bad.view());
  EXPECT_EQ(bad.value, 6) << "the counter accumulates; the caller zeroes it";
  EXPECT_EQ(qo.bytes, q.bytes);
  EXPECT_EQ(ko.bytes, k.bytes);
  for (auto [x, x0, h] : {std::tuple{&q, &q0, hq}, std::tuple{&k, &k0, hk}}) {
    for (int64_t row = 0; row < t * h; ++row) {
      const bool rotated_token = !bad_token[row / h];
      bool same = true;
      for (int64_t e = 0; e < d; ++e) same = same && x->at(row, e) == x0->at(row, e);
      EXPECT_EQ(same, !rotated_token) << "row " << row;
    }
  }
}

// q [T, Hq, D] and k [T, Hk, D] as views into a fused [T, (Hq + 2 Hk) D] buffer.
struct Fused {
  HostTensor buf;
  int64_t hq, hk, d;
  Fused(DType dtype, int64_t t, int64_t hq, int64_t hk, int64_t d, uint64_t seed)
      : buf(dtype, {t, (hq + 2 * hk) * d}), hq(hq), hk(hk), d(d) {
    std::mt19937_64 rng(seed);
    buf.randn(rng);
  }
  TensorView part(int64_t first_head, int64_t heads) {
    const int64_t sizes[3] = {buf.sizes[0], heads, d}, strides[3] = {buf.cols(), d, 1};
    return TensorView(buf.bytes.data() + first_head * d * dtype_size(buf.dtype), buf.dtype,
                      Device::cpu(), sizes, strides);
  }
  TensorView q() { return part(0, hq); }
  TensorView k() { return part(hq, hk); }
};

TEST(RopeRef, StridedViewsIntoAFusedQkvBufferWithGqa) {
  const int64_t t = 5, hq = 4, hk = 2, d = 8, r = 6;
  HostTensor cache = rope_cache(16, r);
  std::vector<int64_t> pos = {0, 15, 3, -2, 8};
  Fused fused(DType::bf16, t, hq, hk, d, 14);
  HostTensor before = fused.buf;
  // The same heads as contiguous tensors.
  HostTensor q(DType::bf16, {t, hq, d}), k(DType::bf16, {t, hk, d});
  for (int64_t s = 0; s < t; ++s) {
    for (int64_t e = 0; e < hq * d; ++e) q.set(s * hq + e / d, e % d, before.at(s, e));
    for (int64_t e = 0; e < hk * d; ++e) k.set(s * hk + e / d, e % d, before.at(s, hq * d + e));
  }
  Counter bad, bad_contiguous;
  rope(fused.q(), fused.k(), fused.q(), fused.k(), cache.view(), i64_view(pos), RopeLayout::neox, r,
       bad.view());
  rope(q.view(), k.view(), q.view(), k.view(), cache.view(), i64_view(pos), RopeLayout::neox, r,
       bad_contiguous.view());
  EXPECT_EQ(bad.value, 1);
  EXPECT_EQ(bad_contiguous.value, 1);
  for (int64_t s = 0; s < t; ++s) {
    for (int64_t e = 0; e < hq * d; ++e) EXPECT_EQ(fused.buf.at(s, e), q.at(s * hq + e / d, e % d));
    for (int64_t e = 0; e < hk * d; ++e) {
      EXPECT_EQ(fused.buf.at(s, hq * d + e), k.at(s * hk + e / d, e % d));
    }
    for (int64_t e = (hq + hk) * d; e < (hq + 2 * hk) * d; ++e) {
      EXPECT_EQ(fused.buf.at(s, e), before.at(s, e)) << "v is not touched";
    }
  }
  // Out of place from one fused buffer into another: the same values, its v columns unwritten.
  Fused src(DType::bf16, t, hq, hk, d, 14), dst(DType::bf16, t, hq, hk, d, 15);
  HostTensor dst_before = dst.buf;
  rope(dst.q(), dst.k(), src.q(), src.k(), cache.view(), i64_view(pos), RopeLayout::neox, r,
       bad.view());
  for (int64_t s = 0; s < t; ++s) {
    for (int64_t e = 0; e < (hq + 2 * hk) * d; ++e) {
      const double want = e < (hq + hk) * d ? fused.buf.at(s, e) : dst_before.at(s, e);
      EXPECT_EQ(dst.buf.at(s, e), want) << s << ", " << e;
    }
  }
}

TEST(RopeRef, NoTokensIsANoOp) {
  HostTensor q(DType::bf16, {0, 2, 8}), k(DType::bf16, {0, 1, 8});
  HostTensor cache = rope_cache(4, 8);
  std::vector<int64_t> pos;
  Counter bad;
  rope(q.view(), k.view(), q.view(), k.view(), cache.view(), i64_view(pos), RopeLayout::neox, 8,
       bad.view());
  EXPECT_EQ(bad.value, 0);
  EXPECT_EQ(last_receipt().op, "rope");
}

TEST(RopeRef, LayoutNames) {
  EXPECT_EQ(rope_layout("neox"), RopeLayout::neox);
  EXPECT_EQ(rope_layout("gptj"), RopeLayout::gptj);
  EXPECT_EQ(rope_layout(rope_layout_name(RopeLayout::gptj)), RopeLayout::gptj);
  expect_error([] { rope_layout("llama"); },
               "rope: argument 'layout': expected \"neox\" or \"gptj\", got \"llama\"");
}

}  // namespace
}  // namespace kiln
