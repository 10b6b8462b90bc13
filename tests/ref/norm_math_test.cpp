// The reference normalization against the math: hand-worked rows, invariants, and every
// backward against central finite differences of its forward in float64.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/host_tensor.h"
#include "kiln/ops/norm.h"
#include "ref/norm.h"

namespace kiln {
namespace {

using testing::HostTensor;

TEST(NormRef, RmsNormHandWorked) {
  // x = [1, 2, 3, 4]: mean(x^2) = 7.5, so y = x / sqrt(7.5 + eps) * w.
  HostTensor x(DType::f32, {1, 4}), w(DType::f32, {4}), y(DType::f32, {1, 4});
  for (int j = 0; j < 4; ++j) {
    x.set(0, j, j + 1);
    w.set(0, j, 0.5 * (j + 1));
  }
  const double eps = 0.5;
  rms_norm(y.view(), x.view(), w.view(), eps);
  for (int j = 0; j < 4; ++j) {
    EXPECT_NEAR(y.at(0, j), (j + 1) / std::sqrt(8.0) * 0.5 * (j + 1), 1e-6) << j;
  }
  EXPECT_EQ(last_receipt().op, "rms_norm");
  EXPECT_EQ(last_receipt().backend, "reference");
}

TEST(NormRef, LayerNormHandWorked) {
  // x = [1, 2, 3, 4]: mean 2.5, population variance 1.25.
  HostTensor x(DType::f32, {1, 4}), w(DType::f32, {4}), b(DType::f32, {4}), y(DType::f32, {1, 4});
  for (int j = 0; j < 4; ++j) {
    x.set(0, j, j + 1);
    w.set(0, j, 2.0);
    b.set(0, j, -1.0 + j);
  }
  layer_norm(y.view(), x.view(), w.view(), b.view(), 0.0);
  for (int j = 0; j < 4; ++j) {
    EXPECT_NEAR(y.at(0, j), (j + 1 - 2.5) / std::sqrt(1.25) * 2.0 + (-1.0 + j), 1e-6) << j;
  }
}

TEST(NormRef, AddRmsNormWritesSumAndNormalisesIt) {
  HostTensor x(DType::bf16, {2, 3}), r(DType::bf16, {2, 3});
  HostTensor y(DType::bf16, {2, 3}), r_out(DType::bf16, {2, 3}), y_plain(DType::bf16, {2, 3});
  std::mt19937_64 rng(1);
  x.randn(rng);
  r.randn(rng);
  add_rms_norm(y.view(), r_out.view(), x.view(), r.view(), {}, 1e-6);
  EXPECT_EQ(last_receipt().op, "add_rms_norm");
  rms_norm(y_plain.view(), r_out.view(), {}, 1e-6);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 3; ++j) {
      // The sum is rounded to bf16 once; y is the plain norm of that rounded sum.
      HostTensor one(DType::bf16, {1});
      one.set(0, 0, x.at(i, j) + r.at(i, j));
      EXPECT_EQ(r_out.at(i, j), one.at(0, 0));
      EXPECT_EQ(y.at(i, j), y_plain.at(i, j));
    }
  }
}

TEST(NormRef, AbsentWeightAndBiasAreOneAndZero) {
  std::mt19937_64 rng(2);
  HostTensor x(DType::f32, {5, 33}), ones(DType::f32, {33}), zeros(DType::f32, {33});
  x.randn(rng, 0.3, 2.0);
  for (int j = 0; j < 33; ++j) {
    ones.set(0, j, 1.0);
    zeros.set(0, j, 0.0);
  }
  HostTensor y1(DType::f32, {5, 33}), y2(DType::f32, {5, 33});
  layer_norm(y1.view(), x.view(), {}, {}, 1e-5);
  layer_norm(y2.view(), x.view(), ones.view(), zeros.view(), 1e-5);
  EXPECT_EQ(y1.bytes, y2.bytes);
}

TEST(NormRef, Invariants) {
  // RMSNorm without weight: mean(y^2) = mean(x^2) / (mean(x^2) + eps) ~ 1. LayerNorm: mean 0,
  // variance ~1.
  std::mt19937_64 rng(3);
  HostTensor x(DType::f32, {4, 257}), y(DType::f32, {4, 257});
  x.randn(rng, 1.5, 3.0);
  rms_norm(y.view(), x.view(), {}, 0.0);
  for (int i = 0; i < 4; ++i) {
    double ms = 0;
    for (int j = 0; j < 257; ++j) ms += y.at(i, j) * y.at(i, j) / 257;
    EXPECT_NEAR(ms, 1.0, 1e-5);
  }
  layer_norm(y.view(), x.view(), {}, {}, 0.0);
  for (int i = 0; i < 4; ++i) {
    double mean = 0, var = 0;
    for (int j = 0; j < 257; ++j) mean += y.at(i, j) / 257;
    for (int j = 0; j < 257; ++j) var += (y.at(i, j) - mean) * (y.at(i, j) - mean) / 257;
    EXPECT_NEAR(mean, 0.0, 1e-6);
    EXPECT_NEAR(var, 1.0, 1e-5);
  }
}

TEST(NormRef, StridedRowsMatchContiguous) {
  std::mt19937_64 rng(4);
  HostTensor x(DType::f16, {3, 2, 10}, /*row_pitch=*/17), xc(DType::f16, {3, 2, 10});
  x.randn(rng);
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 10; ++j) xc.set(i, j, x.at(i, j));
  HostTensor y(DType::f16, {3, 2, 10}, 13), yc(DType::f16, {3, 2, 10});
  rms_norm(y.view(), x.view(), {}, 1e-6);
  rms_norm(yc.view(), xc.view(), {}, 1e-6);
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 10; ++j) EXPECT_EQ(y.at(i, j), yc.at(i, j));
}

// Central finite differences of L = sum(y * g) in float64, against norm_backward_row.
struct FdCase {
  NormKind kind;
  int n;
  bool weight;
};

class NormRefFiniteDifference : public ::testing::TestWithParam<FdCase> {};

TEST_P(NormRefFiniteDifference, BackwardMatchesForward) {
  const FdCase c = GetParam();
  std::mt19937_64 rng(100 + c.n);
  std::normal_distribution<double> dist(0.2, 1.3);
  std::vector<double> x(c.n), g(c.n), w(c.n), y(c.n), dx(c.n), dw(c.n, 0.0), db(c.n, 0.0);
  for (int j = 0; j < c.n; ++j) {
    x[j] = dist(rng);
    g[j] = dist(rng);
    w[j] = dist(rng);
  }
  const double* wp = c.weight ? w.data() : nullptr;
  const double eps = 1e-3;
  ref::norm_backward_row(c.kind, x, g, wp, eps, dx, dw.data(), db.data());
  auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ws,
                  const std::vector<double>& bs) {
    std::vector<double> out(c.n);
    ref::norm_forward_row(c.kind, xs, c.weight ? ws.data() : nullptr,
                          c.kind == NormKind::layer ? bs.data() : nullptr, eps, out);
    double l = 0;
    for (int j = 0; j < c.n; ++j) l += out[j] * g[j];
    return l;
  };
  std::vector<double> b(c.n, 0.1);
  const double h = 1e-6;
  for (int j = 0; j < c.n; ++j) {
    auto xp = x, xm = x;
    xp[j] += h;
    xm[j] -= h;
    EXPECT_NEAR(dx[j], (loss(xp, w, b) - loss(xm, w, b)) / (2 * h), 1e-6) << "dx " << j;
    if (c.weight) {
      auto wpl = w, wmi = w;
      wpl[j] += h;
      wmi[j] -= h;
      EXPECT_NEAR(dw[j], (loss(x, wpl, b) - loss(x, wmi, b)) / (2 * h), 1e-6) << "dw " << j;
    }
    if (c.kind == NormKind::layer) {
      auto bp = b, bm = b;
      bp[j] += h;
      bm[j] -= h;
      EXPECT_NEAR(db[j], (loss(x, w, bp) - loss(x, w, bm)) / (2 * h), 1e-6) << "db " << j;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Rows, NormRefFiniteDifference,
    ::testing::Values(FdCase{NormKind::rms, 1, true}, FdCase{NormKind::rms, 7, true},
                      FdCase{NormKind::rms, 64, false}, FdCase{NormKind::layer, 2, true},
                      FdCase{NormKind::layer, 7, true}, FdCase{NormKind::layer, 64, false}));

TEST(NormRef, TensorBackwardMatchesRowMathAndAddsResidualGradient) {
  // The tensor-level backward (f32 I/O) = the row math summed over rows, plus dresidual.
  std::mt19937_64 rng(5);
  const int m = 6, n = 19;
  HostTensor x(DType::f32, {m, n}), dy(DType::f32, {m, n}), dres(DType::f32, {m, n});
  HostTensor w(DType::f32, {n}), dx(DType::f32, {m, n}), dw(DType::f32, {n}), db(DType::f32, {n});
  x.randn(rng);
  dy.randn(rng);
  dres.randn(rng);
  w.randn(rng);
  layer_norm_backward(dx.view(), dw.view(), db.view(), dy.view(), x.view(), w.view(), 1e-5,
                      dres.view(), {});
  std::vector<double> wd(n), dwd(n, 0.0), dbd(n, 0.0), xr(n), gr(n), dxr(n);
  for (int j = 0; j < n; ++j) wd[j] = w.at(0, j);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      xr[j] = x.at(i, j);
      gr[j] = dy.at(i, j);
    }
    ref::norm_backward_row(NormKind::layer, xr, gr, wd.data(), 1e-5, dxr, dwd.data(), dbd.data());
    for (int j = 0; j < n; ++j) EXPECT_NEAR(dx.at(i, j), dxr[j] + dres.at(i, j), 1e-5);
  }
  for (int j = 0; j < n; ++j) {
    EXPECT_NEAR(dw.at(0, j), dwd[j], 1e-5);
    EXPECT_NEAR(db.at(0, j), dbd[j], 1e-5);
  }
}

TEST(NormRef, BackwardDxMayAliasDy) {
  std::mt19937_64 rng(6);
  HostTensor x(DType::bf16, {4, 40}), dy(DType::bf16, {4, 40}), dx(DType::bf16, {4, 40});
  x.randn(rng);
  dy.randn(rng);
  HostTensor dy_copy = dy;
  rms_norm_backward(dx.view(), {}, dy.view(), x.view(), {}, 1e-6, {}, {});
  rms_norm_backward(dy_copy.view(), {}, dy_copy.view(), x.view(), {}, 1e-6, {}, {});
  EXPECT_EQ(dx.bytes, dy_copy.bytes);
}

}  // namespace
}  // namespace kiln
