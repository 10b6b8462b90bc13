// The reference Sinkhorn-Knopp against the math: a hand-worked 2 x 2 step, doubly stochastic
// results, invariance to a constant shift, the backward against central finite differences in
// float64, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/mhc.h"
#include "ref/mhc.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

TEST(SinkhornRef, OneIterationHandWorked) {
  // exp(logits) = [[1, 2], [3, 4]]: rows -> [[1/3, 2/3], [3/7, 4/7]]; column sums 16/21, 26/21.
  HostTensor logits(DType::f32, {1, 2, 2}), out(DType::f32, {1, 2, 2});
  const double e[2][2] = {{1, 2}, {3, 4}};
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) logits.set(i, j, std::log(e[i][j]));
  }
  sinkhorn_knopp(out.view(), logits.view(), 1, 0.0);
  EXPECT_NEAR(out.at(0, 0), 7.0 / 16, 1e-6);
  EXPECT_NEAR(out.at(0, 1), 14.0 / 26, 1e-6);
  EXPECT_NEAR(out.at(1, 0), 9.0 / 16, 1e-6);
  EXPECT_NEAR(out.at(1, 1), 12.0 / 26, 1e-6);
  EXPECT_EQ(last_receipt().op, "sinkhorn_knopp");
}

TEST(SinkhornRef, ResultsAreDoublyStochasticAndShiftInvariant) {
  std::mt19937_64 rng(1);
  for (int n : {1, 4, 7, 64}) {
    HostTensor logits(DType::f32, {3, n, n}), out(DType::f32, {3, n, n}),
        shifted_out(DType::f32, {3, n, n});
    logits.randn(rng);
    HostTensor shifted(DType::f32, {3, n, n});
    for (int64_t r = 0; r < 3 * n; ++r) {
      for (int j = 0; j < n; ++j) shifted.set(r, j, logits.at(r, j) + 5.0);
    }
    sinkhorn_knopp(out.view(), logits.view(), 30, 0.0);
    sinkhorn_knopp(shifted_out.view(), shifted.view(), 30, 0.0);
    for (int b = 0; b < 3; ++b) {
      for (int line = 0; line < n; ++line) {
        double row = 0, col = 0;
        for (int k = 0; k < n; ++k) {
          row += out.at(b * n + line, k);
          col += out.at(b * n + k, line);
          EXPECT_NEAR(shifted_out.at(b * n + line, k), out.at(b * n + line, k), 1e-6);
        }
        EXPECT_NEAR(col, 1.0, 1e-5) << "n=" << n;
        EXPECT_NEAR(row, 1.0, 1e-3) << "n=" << n;  // rows converge; columns are exact last
      }
    }
  }
}

TEST(SinkhornRef, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(2);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int n : {1, 2, 4, 5}) {
    for (double eps : {0.0, 1e-3}) {
      const int iters = 6;
      std::vector<double> logits(n * n), dout(n * n), out(n * n), scratch(n * n), grad(n * n);
      for (double& v : logits) v = normal(rng);
      for (double& v : dout) v = normal(rng);
      ref::sinkhorn_matrix(n, iters, eps, logits, out, dout, grad);
      const double h = 1e-6;
      for (int e = 0; e < n * n; ++e) {
        std::vector<double> up = logits, down = logits;
        up[e] += h;
        down[e] -= h;
        std::vector<double> y_up(n * n), y_down(n * n);
        ref::sinkhorn_matrix(n, iters, eps, up, y_up);
        ref::sinkhorn_matrix(n, iters, eps, down, y_down);
        double fd = 0;
        for (int k = 0; k < n * n; ++k) fd += dout[k] * (y_up[k] - y_down[k]) / (2 * h);
        // eps > 0: the max shift (held constant in the backward) moves the result by O(eps).
        const double tol = (eps == 0 ? 1e-7 : 1e-2 * eps) + 1e-7 * std::abs(fd);
        EXPECT_NEAR(grad[e], fd, tol) << "n=" << n << " eps=" << eps << " e=" << e;
      }
    }
  }
}

TEST(SinkhornRef, BackwardEntryPointWiresItsArguments) {
  std::mt19937_64 rng(3);
  const int n = 4;
  HostTensor logits(DType::f32, {2, n, n}), dout(DType::f32, {2, n, n}), dl(DType::f32, {2, n, n});
  logits.randn(rng);
  dout.randn(rng);
  sinkhorn_knopp_backward(dl.view(), dout.view(), logits.view(), 5, 1e-6);
  for (int b = 0; b < 2; ++b) {
    std::vector<double> l(n * n), d(n * n), out(n * n), g(n * n);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        l[i * n + j] = logits.at(b * n + i, j);
        d[i * n + j] = dout.at(b * n + i, j);
      }
    }
    ref::sinkhorn_matrix(n, 5, static_cast<float>(1e-6), l, out, d, g);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) EXPECT_NEAR(dl.at(b * n + i, j), g[i * n + j], 1e-5);
    }
  }
  EXPECT_EQ(last_receipt().op, "sinkhorn_knopp_backward");
}

TEST(SinkhornRef, BadInputIsReported) {
  HostTensor rect(DType::f32, {2, 3, 4}), big(DType::f32, {1, 65, 65}), ok(DType::f32, {2, 4, 4});
  HostTensor out(DType::f32, {2, 4, 4});
  expect_error([&] { sinkhorn_knopp(out.view(), rect.view(), 5, 0.0); },
               "sinkhorn_knopp: argument 'logits': expected shape [B, n, n] with 1 <= n <= 64");
  expect_error([&] { sinkhorn_knopp(out.view(), big.view(), 5, 0.0); }, "argument 'logits'");
  expect_error([&] { sinkhorn_knopp(out.view(), ok.view(), 0, 0.0); },
               "sinkhorn_knopp: argument 'iters': expected >= 1");
  expect_error([&] { sinkhorn_knopp(out.view(), ok.view(), 3, -1.0); },
               "sinkhorn_knopp: argument 'eps'");
  expect_error([&] { sinkhorn_knopp(rect.view(), ok.view(), 3, 0.0); },
               "sinkhorn_knopp: argument 'out'");
}

}  // namespace
}  // namespace kiln
