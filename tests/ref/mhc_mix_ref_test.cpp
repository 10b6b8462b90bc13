// The reference mHC stream mixing against the math: hand-worked n = 2 cases (the paper's left
// multiplication, and the transposed convention as a strided H_res view), n = 3 and 4 against
// plain loops with broadcast H and stream-major x, the identity H_res, both backwards against
// central finite differences, and every bad input's message.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/mhc.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

TensorView strided(HostTensor& t, std::vector<int64_t> sizes, std::vector<int64_t> strides,
                   Device device = Device::cpu()) {
  return TensorView(t.bytes.data(), t.dtype, device, sizes, strides);
}

// Values in logical (row-major) order.
void set_all(HostTensor& t, const std::vector<double>& v) {
  for (size_t k = 0; k < v.size(); ++k) t.set(k / t.cols(), k % t.cols(), v[k]);
}

TEST(MhcMixRef, PreMixHandWorkedN2) {
  HostTensor x(DType::f32, {1, 2, 3}), h_pre(DType::f32, {1, 2}), h(DType::f32, {1, 3});
  set_all(x, {1, 2, 3, 4, 5, 6});
  set_all(h_pre, {0.5, -2});
  mhc_pre_mix(h.view(), x.view(), h_pre.view());
  // 0.5 [1, 2, 3] - 2 [4, 5, 6]
  const double want[3] = {-7.5, -9, -10.5};
  for (int c = 0; c < 3; ++c) EXPECT_DOUBLE_EQ(h.at(0, c), want[c]);
  EXPECT_EQ(last_receipt().op, "mhc_pre_mix");

  HostTensor dh(DType::f32, {1, 3}), dx(DType::f32, {1, 2, 3}), dh_pre(DType::f32, {1, 2});
  set_all(dh, {1, 2, -1});
  mhc_pre_mix_backward(dx.view(), dh_pre.view(), dh.view(), x.view(), h_pre.view());
  const double want_dx[2][3] = {{0.5, 1, -0.5}, {-2, -4, 2}};
  for (int i = 0; i < 2; ++i) {
    for (int c = 0; c < 3; ++c) EXPECT_DOUBLE_EQ(dx.at(i, c), want_dx[i][c]);
  }
  EXPECT_DOUBLE_EQ(dh_pre.at(0, 0), 2);  // 1 + 4 - 3
  EXPECT_DOUBLE_EQ(dh_pre.at(0, 1), 8);  // 4 + 10 - 6
  EXPECT_EQ(last_receipt().op, "mhc_pre_mix_backward");
}

struct PostN2 {
  HostTensor x{DType::f32, {1, 2, 2}}, y{DType::f32, {1, 2}}, h_res{DType::f32, {1, 2, 2}},
      h_post{DType::f32, {1, 2}}, out{DType::f32, {1, 2, 2}};
  PostN2() {
    set_all(x, {1, 2, 3, 4});  // x0 = [1, 2], x1 = [3, 4]
    set_all(y, {5, 6});
    set_all(h_res, {0.5, 0.25, 1, -1});
    set_all(h_post, {2, -0.5});
  }
};

TEST(MhcMixRef, PostMixHandWorkedN2) {
  PostN2 s;
  mhc_post_mix(s.out.view(), s.x.view(), s.y.view(), s.h_res.view(), s.h_post.view());
  // x'0 = 0.5 x0 + 0.25 x1 + 2 y; x'1 = x0 - x1 - 0.5 y.
  const double want[2][2] = {{11.25, 14}, {-4.5, -5}};
  for (int j = 0; j < 2; ++j) {
    for (int c = 0; c < 2; ++c) EXPECT_DOUBLE_EQ(s.out.at(j, c), want[j][c]) << j << "," << c;
  }
  EXPECT_EQ(last_receipt().op, "mhc_post_mix");
  // The transposed convention, x'_j = sum_i H[i, j] x_i, as the view H.transpose(-1, -2):
  // x'0 = 0.5 x0 + 1 x1 + 2 y; x'1 = 0.25 x0 - x1 - 0.5 y.
  mhc_post_mix(s.out.view(), s.x.view(), s.y.view(), strided(s.h_res, {1, 2, 2}, {4, 1, 2}),
               s.h_post.view());
  const double want_t[2][2] = {{13.5, 17}, {-5.25, -6.5}};
  for (int j = 0; j < 2; ++j) {
    for (int c = 0; c < 2; ++c) EXPECT_DOUBLE_EQ(s.out.at(j, c), want_t[j][c]) << j << "," << c;
  }
}

TEST(MhcMixRef, PostMixBackwardHandWorkedN2) {
  PostN2 s;
  HostTensor g(DType::f32, {1, 2, 2}), dx(DType::f32, {1, 2, 2}), dy(DType::f32, {1, 2}),
      dh_res(DType::f32, {1, 2, 2}), dh_post(DType::f32, {1, 2});
  set_all(g, {1, -1, 2, 0.5});  // g0 = [1, -1], g1 = [2, 0.5]
  mhc_post_mix_backward(dx.view(), dy.view(), dh_res.view(), dh_post.view(), g.view(), s.x.view(),
                        s.y.view(), s.h_res.view(), s.h_post.view());
  // dx_i = sum_j H[j, i] g_j; dy = 2 g0 - 0.5 g1; dH_res[j, i] = <g_j, x_i>; dH_post[j] = <g_j, y>.
  const double want_dx[2][2] = {{2.5, 0}, {-1.75, -0.75}};
  for (int i = 0; i < 2; ++i) {
    for (int c = 0; c < 2; ++c) EXPECT_DOUBLE_EQ(dx.at(i, c), want_dx[i][c]) << i << "," << c;
  }
  EXPECT_DOUBLE_EQ(dy.at(0, 0), 1);
  EXPECT_DOUBLE_EQ(dy.at(0, 1), -2.25);
  const double want_dh[2][2] = {{-1, -1}, {3, 8}};
  for (int j = 0; j < 2; ++j) {
    for (int i = 0; i < 2; ++i) EXPECT_DOUBLE_EQ(dh_res.at(j, i), want_dh[j][i]) << j << "," << i;
  }
  EXPECT_DOUBLE_EQ(dh_post.at(0, 0), -1);
  EXPECT_DOUBLE_EQ(dh_post.at(0, 1), 13);
  EXPECT_EQ(last_receipt().op, "mhc_post_mix_backward");
}

// n = 3 and 4, f32 and bf16, x stored stream-major ([n, T, C] memory viewed as [T, n, C]: free
// token and stream strides), one static H broadcast over T (stride 0), against plain loops.
TEST(MhcMixRef, PostAndPreMixMatchPlainLoops) {
  std::mt19937_64 rng(3);
  const int64_t T = 3, C = 5;
  for (int n : {3, 4}) {
    for (DType dt : {DType::f32, DType::bf16}) {
      HostTensor x(dt, {n, T, C}), y(dt, {T, C}), h_res(DType::f32, {n, n}),
          h_post(DType::f32, {n}), h_pre(DType::f32, {n});
      for (HostTensor* t : {&x, &y, &h_res, &h_post, &h_pre}) t->randn(rng);
      const TensorView xv = strided(x, {T, n, C}, {C, T * C, 1});
      HostTensor out(dt, {T, n, C}), h(dt, {T, C});
      mhc_post_mix(out.view(), xv, y.view(), strided(h_res, {T, n, n}, {0, n, 1}),
                   strided(h_post, {T, n}, {0, 1}));
      mhc_pre_mix(h.view(), xv, strided(h_pre, {T, n}, {0, 1}));
      const double tol = dt == DType::f32 ? 1e-5 : 1e-2;
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t c = 0; c < C; ++c) {
          double pre = 0;
          for (int i = 0; i < n; ++i) pre += h_pre.at(0, i) * x.at(i * T + t, c);
          EXPECT_NEAR(h.at(t, c), pre, tol * (1 + std::abs(pre))) << n << " " << t << "," << c;
          for (int j = 0; j < n; ++j) {
            double want = h_post.at(0, j) * y.at(t, c);
            for (int i = 0; i < n; ++i) want += h_res.at(j, i) * x.at(i * T + t, c);
            EXPECT_NEAR(out.at(t * n + j, c), want, tol * (1 + std::abs(want)))
                << "n=" << n << " " << dtype_name(dt) << " t=" << t << " j=" << j << " c=" << c;
          }
        }
      }
    }
  }
}

TEST(MhcMixRef, IdentityResidualAddsThePostMixedOutput) {
  std::mt19937_64 rng(4);
  const int64_t T = 4, n = 4, C = 6;
  HostTensor x(DType::f32, {T, n, C}), y(DType::f32, {T, C}), h_res(DType::f32, {T, n, n}),
      h_post(DType::f32, {T, n}), out(DType::f32, {T, n, C});
  x.randn(rng);
  y.randn(rng);
  h_post.randn(rng);
  for (int64_t r = 0; r < T * n; ++r) {
    for (int64_t i = 0; i < n; ++i) h_res.set(r, i, r % n == i ? 1.0 : 0.0);
  }
  mhc_post_mix(out.view(), x.view(), y.view(), h_res.view(), h_post.view());
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t c = 0; c < C; ++c) {
        const double want = x.at(t * n + j, c) + h_post.at(t, j) * y.at(t, c);
        EXPECT_NEAR(out.at(t * n + j, c), want, 1e-6 * (1 + std::abs(want)));
      }
    }
  }
}

// Random multiples of 1/4 in [-2, 2] without 0: every product and sum below is exact in f32, so
// the finite differences are float64-exact.
void dyadic(HostTensor& t, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> d(1, 8);
  std::bernoulli_distribution sign(0.5);
  for (int64_t r = 0; r < t.rows(); ++r) {
    for (int64_t c = 0; c < t.cols(); ++c) t.set(r, c, (sign(rng) ? 1 : -1) * d(rng) / 4.0);
  }
}

// Checks `grad` (a tensor of the same shape as `input`) against central differences of
// loss() = <dout, op output> in float64 as each element of `input` moves by +-h.
void expect_gradient(HostTensor& input, const HostTensor& grad, const std::function<double()>& loss,
                     const char* what) {
  const double h = 0.25;
  for (int64_t r = 0; r < input.rows(); ++r) {
    for (int64_t c = 0; c < input.cols(); ++c) {
      const double v = input.at(r, c);
      input.set(r, c, v + h);
      const double up = loss();
      input.set(r, c, v - h);
      const double down = loss();
      input.set(r, c, v);
      EXPECT_NEAR(grad.at(r, c), (up - down) / (2 * h), 1e-9)
          << what << "(" << r << ", " << c << ")";
    }
  }
}

double inner(const HostTensor& a, const HostTensor& b) {
  double s = 0;
  for (int64_t r = 0; r < a.rows(); ++r) {
    for (int64_t c = 0; c < a.cols(); ++c) s += a.at(r, c) * b.at(r, c);
  }
  return s;
}

TEST(MhcMixRef, BackwardsMatchCentralDifferences) {
  std::mt19937_64 rng(5);
  const int64_t T = 2, n = 3, C = 5;
  HostTensor x(DType::f32, {T, n, C}), y(DType::f32, {T, C}), h_res(DType::f32, {T, n, n}),
      h_post(DType::f32, {T, n}), h_pre(DType::f32, {T, n}), g_out(DType::f32, {T, n, C}),
      g_h(DType::f32, {T, C});
  for (HostTensor* t : {&x, &y, &h_res, &h_post, &h_pre, &g_out, &g_h}) dyadic(*t, rng);

  HostTensor out(DType::f32, {T, n, C}), h(DType::f32, {T, C});
  auto post_loss = [&] {
    mhc_post_mix(out.view(), x.view(), y.view(), h_res.view(), h_post.view());
    return inner(out, g_out);
  };
  HostTensor dx(DType::f32, {T, n, C}), dy(DType::f32, {T, C}), dh_res(DType::f32, {T, n, n}),
      dh_post(DType::f32, {T, n});
  mhc_post_mix_backward(dx.view(), dy.view(), dh_res.view(), dh_post.view(), g_out.view(), x.view(),
                        y.view(), h_res.view(), h_post.view());
  expect_gradient(x, dx, post_loss, "post dx");
  expect_gradient(y, dy, post_loss, "post dy");
  expect_gradient(h_res, dh_res, post_loss, "post dh_res");
  expect_gradient(h_post, dh_post, post_loss, "post dh_post");

  auto pre_loss = [&] {
    mhc_pre_mix(h.view(), x.view(), h_pre.view());
    return inner(h, g_h);
  };
  HostTensor dx_pre(DType::f32, {T, n, C}), dh_pre(DType::f32, {T, n});
  mhc_pre_mix_backward(dx_pre.view(), dh_pre.view(), g_h.view(), x.view(), h_pre.view());
  expect_gradient(x, dx_pre, pre_loss, "pre dx");
  expect_gradient(h_pre, dh_pre, pre_loss, "pre dh_pre");
  // Without dh_pre, dx alone.
  HostTensor dx_only(DType::f32, {T, n, C});
  mhc_pre_mix_backward(dx_only.view(), TensorView(), g_h.view(), x.view(), h_pre.view());
  EXPECT_EQ(inner(dx_only, dx_only), inner(dx_pre, dx_pre));
}

// C = 0: nothing to mix, and the dot products over no columns are 0 (written, not left alone).
TEST(MhcMixRef, EmptyHiddenGivesZeroCoefficientGradients) {
  const int64_t T = 2, n = 3;
  HostTensor x(DType::f32, {T, n, 0}), y(DType::f32, {T, 0}), g(DType::f32, {T, n, 0}),
      dx(DType::f32, {T, n, 0}), dy(DType::f32, {T, 0});
  HostTensor h_res(DType::f32, {T, n, n}), h_post(DType::f32, {T, n}),
      dh_res(DType::f32, {T, n, n}), dh_post(DType::f32, {T, n});
  std::mt19937_64 rng(6);
  h_res.randn(rng);
  h_post.randn(rng);
  mhc_post_mix_backward(dx.view(), dy.view(), dh_res.view(), dh_post.view(), g.view(), x.view(),
                        y.view(), h_res.view(), h_post.view());
  EXPECT_EQ(inner(dh_res, dh_res) + inner(dh_post, dh_post), 0.0);
}

TEST(MhcMixRef, BadInputIsReported) {
  const int64_t T = 2, n = 4, C = 8;
  HostTensor x(DType::bf16, {T, n, C}), y(DType::bf16, {T, C}), h_res(DType::f32, {T, n, n}),
      h_post(DType::f32, {T, n}), out(DType::bf16, {T, n, C});
  HostTensor flat(DType::bf16, {T, C}), nine(DType::bf16, {T, 9, C}), none(DType::bf16, {T, 0, C});
  HostTensor y32(DType::f32, {T, C}), y_short(DType::bf16, {T, C - 1}),
      res16(DType::bf16, {T, n, n}), res43(DType::f32, {T, n, 3}), post3(DType::f32, {T, 3}),
      out_f16(DType::f16, {T, n, C}), out_short(DType::bf16, {T, n, C - 1});
  auto post = [&](const TensorView& o, const TensorView& xv, const TensorView& yv,
                  const TensorView& hr,
                  const TensorView& hp) { return [=] { mhc_post_mix(o, xv, yv, hr, hp); }; };
  const std::string p = "mhc_post_mix: argument ";
  expect_error(post(out.view(), flat.view(), y.view(), h_res.view(), h_post.view()),
               p + "'x': expected rank 3 ([T, n, C]), got shape [2, 8]");
  expect_error(post(out.view(), nine.view(), y.view(), h_res.view(), h_post.view()),
               p + "'x': expected n = x.size(1) in [1, 8], got shape [2, 9, 8]");
  expect_error(post(out.view(), none.view(), y.view(), h_res.view(), h_post.view()),
               p + "'x': expected n = x.size(1) in [1, 8], got shape [2, 0, 8]");
  expect_error(post(out.view(), x.view(), y32.view(), h_res.view(), h_post.view()),
               p + "'y': expected dtype bf16, got f32");
  expect_error(post(out.view(), x.view(), y_short.view(), h_res.view(), h_post.view()),
               p + "'y': expected shape [2, 8], got shape [2, 7]");
  expect_error(post(out.view(), x.view(), y.view(), res16.view(), h_post.view()),
               p + "'h_res': expected dtype f32, got bf16");
  expect_error(post(out.view(), x.view(), y.view(), res43.view(), h_post.view()),
               p + "'h_res': expected shape [2, 4, 4], got shape [2, 4, 3]");
  expect_error(post(out.view(), x.view(), y.view(), h_res.view(), post3.view()),
               p + "'h_post': expected shape [2, 4], got shape [2, 3]");
  expect_error(post(out_f16.view(), x.view(), y.view(), h_res.view(), h_post.view()),
               p + "'x_out': expected dtype bf16, got f16");
  expect_error(post(out_short.view(), x.view(), y.view(), h_res.view(), h_post.view()),
               p + "'x_out': expected shape [2, 4, 8], got shape [2, 4, 7]");
  expect_error(
      post(out.view(), strided(x, {T, n, C}, {1, T, T * n}), y.view(), h_res.view(), h_post.view()),
      p + "'x': expected a contiguous last dim (stride 1), got stride 8");
  expect_error(post(out.view(), x.view(), strided(y, {T, C}, {C, 1}, Device::cuda(0)), h_res.view(),
                    h_post.view()),
               p + "'y': expected a tensor on cpu, got one on cuda:0");

  HostTensor g(DType::bf16, {T, n, C}), dx(DType::bf16, {T, n, C}), dy(DType::bf16, {T, C}),
      dh_res(DType::f32, {T, n, n}), dh_post(DType::f32, {T, n}), dh_post16(DType::bf16, {T, n});
  HostTensor g_short(DType::bf16, {T, 3, C});
  expect_error(
      [&] {
        mhc_post_mix_backward(dx.view(), dy.view(), dh_res.view(), dh_post.view(), g_short.view(),
                              x.view(), y.view(), h_res.view(), h_post.view());
      },
      "mhc_post_mix_backward: argument 'dx_out': expected shape [2, 4, 8], got shape [2, 3, 8]");
  expect_error(
      [&] {
        mhc_post_mix_backward(dx.view(), dy.view(), res43.view(), dh_post.view(), g.view(),
                              x.view(), y.view(), h_res.view(), h_post.view());
      },
      "mhc_post_mix_backward: argument 'dh_res': expected shape [2, 4, 4], got shape [2, 4, 3]");
  expect_error(
      [&] {
        mhc_post_mix_backward(dx.view(), dy.view(), dh_res.view(), dh_post16.view(), g.view(),
                              x.view(), y.view(), h_res.view(), h_post.view());
      },
      "mhc_post_mix_backward: argument 'dh_post': expected dtype f32, got bf16");
  expect_error(
      [&] {
        mhc_post_mix_backward(dx.view(), TensorView(), dh_res.view(), dh_post.view(), g.view(),
                              x.view(), y.view(), h_res.view(), h_post.view());
      },
      "mhc_post_mix_backward: argument 'dy': expected a tensor, got absent");

  HostTensor h(DType::bf16, {T, C}), h_long(DType::bf16, {T + 1, C});
  expect_error([&] { mhc_pre_mix(h.view(), x.view(), post3.view()); },
               "mhc_pre_mix: argument 'h_pre': expected shape [2, 4], got shape [2, 3]");
  expect_error([&] { mhc_pre_mix(h_long.view(), x.view(), h_post.view()); },
               "mhc_pre_mix: argument 'h': expected shape [2, 8], got shape [3, 8]");
  expect_error([&] { mhc_pre_mix(h.view(), nine.view(), h_post.view()); },
               "mhc_pre_mix: argument 'x': expected n = x.size(1) in [1, 8]");
  expect_error([&] { mhc_pre_mix(h.view(), x.view(), dh_post16.view()); },
               "mhc_pre_mix: argument 'h_pre': expected dtype f32, got bf16");
  expect_error(
      [&] { mhc_pre_mix_backward(dx.view(), dh_post16.view(), h.view(), x.view(), h_post.view()); },
      "mhc_pre_mix_backward: argument 'dh_pre': expected dtype f32, got bf16");
  expect_error(
      [&] {
        mhc_pre_mix_backward(g_short.view(), dh_post.view(), h.view(), x.view(), h_post.view());
      },
      "mhc_pre_mix_backward: argument 'dx': expected shape [2, 4, 8], got shape [2, 3, 8]");
}

}  // namespace
}  // namespace kiln
