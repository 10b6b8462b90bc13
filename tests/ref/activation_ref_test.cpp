// The reference activations against the math: hand-worked values, every backward against central
// finite differences of its forward in float64, packed == split, in place, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>

#include "common/expect_error.h"
#include "common/host_tensor.h"
#include "kiln/ops/activation.h"
#include "ops/activation_math.h"

namespace kiln {
namespace {

using testing::expect_error;
using testing::HostTensor;

double gelu_erf(double h) {
  return 0.5 * h * (1 + std::erf(h / std::sqrt(2.0)));
}
double gelu_tanh(double h) {
  return 0.5 * h * (1 + std::tanh(std::sqrt(2 / M_PI) * (h + 0.044715 * h * h * h)));
}
double silu(double g) {
  return g / (1 + std::exp(-g));
}

HostTensor row(DType dtype, std::initializer_list<double> values) {
  HostTensor t(dtype, {1, static_cast<int64_t>(values.size())});
  int j = 0;
  for (double v : values) t.set(0, j++, v);
  return t;
}

TEST(ActivationRef, Relu2HandWorked) {
  HostTensor x = row(DType::f32, {-2.0, -0.0, 0.5, 3.0}), y(DType::f32, {1, 4});
  relu2(y.view(), x.view());
  const double want[] = {0.0, 0.0, 0.25, 9.0};
  for (int j = 0; j < 4; ++j) EXPECT_DOUBLE_EQ(y.at(0, j), want[j]) << j;
  EXPECT_EQ(last_receipt().op, "relu2");
  EXPECT_EQ(last_receipt().backend, "reference");
}

TEST(ActivationRef, SwigluHandWorked) {
  // silu(0) = 0, silu(1) = 1 / (1 + e^-1), silu(-1) = -1 / (1 + e).
  HostTensor gate = row(DType::f32, {0.0, 1.0, -1.0, 4.0}),
             up = row(DType::f32, {5.0, 2.0, 3.0, -1.0});
  HostTensor y(DType::f32, {1, 4});
  swiglu(y.view(), gate.view(), up.view());
  const double want[] = {0.0, 2.0 / (1 + std::exp(-1.0)), -3.0 / (1 + std::exp(1.0)),
                         -4.0 / (1 + std::exp(-4.0))};
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(y.at(0, j), want[j], 1e-6) << j;
}

TEST(ActivationRef, GeluResidualHandWorked) {
  // GELU(0) = 0; erf form GELU(1) = 0.8413447 (the normal CDF at 1); tanh form GELU(1) = 0.8411920.
  HostTensor h = row(DType::f32, {0.0, 1.0, -1.0}), g = row(DType::f32, {3.0, 0.0, 1.0});
  HostTensor y(DType::f32, {1, 3});
  gelu_residual(y.view(), h.view(), g.view(), GeluApprox::erf);
  EXPECT_NEAR(y.at(0, 0), 0.0, 1e-7);
  EXPECT_NEAR(y.at(0, 1), 0.8413447, 1e-6);
  EXPECT_NEAR(y.at(0, 2), -0.1586553 * 2.0, 1e-6);
  gelu_residual(y.view(), h.view(), g.view(), GeluApprox::tanh);
  EXPECT_NEAR(y.at(0, 1), 0.8411920, 1e-6);
  EXPECT_NEAR(y.at(0, 2), -0.1588080 * 2.0, 1e-6);
}

// Every backward against central differences of its forward, in float64 on the scalar math the
// reference runs (act::forward / act::backward with F = double).
TEST(ActivationRef, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal(0.0, 1.5);
  const double step = 1e-5;
  for (act::Kind kind :
       {act::Kind::relu2, act::Kind::swiglu, act::Kind::gelu_erf, act::Kind::gelu_tanh}) {
    for (int i = 0; i < 200; ++i) {
      double a = normal(rng);
      if (kind == act::Kind::relu2 && std::abs(a) < 1e-3) a = 0.5;  // the kink
      const double b = normal(rng), dy = normal(rng);
      double da = 0, db = 0;
      act::backward(kind, a, b, dy, da, db);
      const double fd_a =
          (act::forward(kind, a + step, b) - act::forward(kind, a - step, b)) / (2 * step) * dy;
      const double fd_b =
          (act::forward(kind, a, b + step) - act::forward(kind, a, b - step)) / (2 * step) * dy;
      const double tol = 1e-6 * (1 + std::abs(fd_a));
      EXPECT_NEAR(da, fd_a, tol) << static_cast<int>(kind) << " a=" << a << " b=" << b;
      EXPECT_NEAR(db, fd_b, 1e-6 * (1 + std::abs(fd_b)))
          << static_cast<int>(kind) << " a=" << a << " b=" << b;
    }
  }
}

TEST(ActivationRef, ForwardMatchesTextbookFormulas) {
  for (double a : {-6.0, -1.5, -0.1, 0.0, 0.2, 1.0, 7.0}) {
    for (double b : {-2.0, 0.0, 0.5}) {
      EXPECT_NEAR(act::forward(act::Kind::swiglu, a, b), silu(a) * b, 1e-12);
      EXPECT_NEAR(act::forward(act::Kind::gelu_erf, a, b), gelu_erf(a) * (b + 1), 1e-12);
      EXPECT_NEAR(act::forward(act::Kind::gelu_tanh, a, b), gelu_tanh(a) * (b + 1), 1e-12);
      EXPECT_EQ(act::forward(act::Kind::relu2, a, b), a > 0 ? a * a : 0.0);
    }
  }
  // No NaN where exp overflows.
  EXPECT_EQ(act::forward(act::Kind::swiglu, -1000.0, 1.0), -0.0);
  EXPECT_TRUE(std::isfinite(act::forward(act::Kind::swiglu, -100.f, 1.f)));
}

// The entry points wire a, b, dy and the outputs in the documented order.
TEST(ActivationRef, BackwardEntryPointsWireTheirArguments) {
  std::mt19937_64 rng(3);
  HostTensor a(DType::f32, {3, 5}), b(DType::f32, {3, 5}), dy(DType::f32, {3, 5});
  a.randn(rng);
  b.randn(rng);
  dy.randn(rng);
  HostTensor da(DType::f32, {3, 5}), db(DType::f32, {3, 5});
  auto expect = [&](act::Kind kind, bool two) {
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t c = 0; c < 5; ++c) {
        double wa = 0, wb = 0;
        act::backward(kind, a.at(r, c), two ? b.at(r, c) : 0.0, dy.at(r, c), wa, wb);
        EXPECT_NEAR(da.at(r, c), wa, 1e-6 * (1 + std::abs(wa)));
        if (two) {
          EXPECT_NEAR(db.at(r, c), wb, 1e-6 * (1 + std::abs(wb)));
        }
      }
    }
  };
  relu2_backward(da.view(), dy.view(), a.view());
  expect(act::Kind::relu2, false);
  swiglu_backward(da.view(), db.view(), dy.view(), a.view(), b.view());
  expect(act::Kind::swiglu, true);
  gelu_residual_backward(da.view(), db.view(), dy.view(), a.view(), b.view(), GeluApprox::erf);
  expect(act::Kind::gelu_erf, true);
  gelu_residual_backward(da.view(), db.view(), dy.view(), a.view(), b.view(), GeluApprox::tanh);
  expect(act::Kind::gelu_tanh, true);
  EXPECT_EQ(last_receipt().op, "gelu_residual_backward");
}

TEST(ActivationRef, PackedEqualsSplitAndInPlaceEqualsOutOfPlace) {
  std::mt19937_64 rng(5);
  const int64_t n = 6;
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    HostTensor packed(dtype, {4, 2 * n}), gate(dtype, {4, n}), up(dtype, {4, n});
    packed.randn(rng);
    for (int64_t r = 0; r < 4; ++r) {
      for (int64_t c = 0; c < n; ++c) {
        gate.set(r, c, packed.at(r, c));
        up.set(r, c, packed.at(r, n + c));
      }
    }
    HostTensor y_packed(dtype, {4, n}), y_split(dtype, {4, n}), dy(dtype, {4, n});
    dy.randn(rng);
    swiglu(y_packed.view(), packed.view());
    swiglu(y_split.view(), gate.view(), up.view());
    EXPECT_EQ(y_packed.bytes, y_split.bytes) << dtype_name(dtype);
    gelu_residual(y_packed.view(), packed.view(), GeluApprox::tanh);
    gelu_residual(y_split.view(), gate.view(), up.view(), GeluApprox::tanh);
    EXPECT_EQ(y_packed.bytes, y_split.bytes) << dtype_name(dtype);

    HostTensor d_packed(dtype, {4, 2 * n}), dgate(dtype, {4, n}), dup(dtype, {4, n});
    swiglu_backward(d_packed.view(), dy.view(), packed.view());
    swiglu_backward(dgate.view(), dup.view(), dy.view(), gate.view(), up.view());
    for (int64_t r = 0; r < 4; ++r) {
      for (int64_t c = 0; c < n; ++c) {
        EXPECT_EQ(d_packed.at(r, c), dgate.at(r, c));
        EXPECT_EQ(d_packed.at(r, n + c), dup.at(r, c));
      }
    }
    // In place: the backward overwrites gate_up with its own gradient.
    swiglu_backward(packed.view(), dy.view(), packed.view());
    EXPECT_EQ(packed.bytes, d_packed.bytes) << dtype_name(dtype);
  }
}

TEST(ActivationRef, BadInputIsReported) {
  HostTensor x(DType::bf16, {2, 8}), y(DType::bf16, {2, 8}), short_y(DType::bf16, {2, 7});
  HostTensor f32_y(DType::f32, {2, 8}), ints(DType::i32, {2, 8}), odd(DType::bf16, {2, 7});
  expect_error([&] { relu2(short_y.view(), x.view()); }, "relu2: argument 'y'");
  expect_error([&] { relu2(f32_y.view(), x.view()); }, "relu2: argument 'y'");
  expect_error([&] { relu2(ints.view(), ints.view()); }, "relu2: argument 'x'");
  expect_error([&] { swiglu(y.view(), x.view(), TensorView()); }, "swiglu: argument 'up'");
  expect_error([&] { swiglu(y.view(), odd.view()); },
               "split_halves: argument 'packed': expected an even");
  // Different devices.
  TensorView on_gpu = y.view();
  on_gpu.device = Device::cuda(0);
  expect_error([&] { gelu_residual(on_gpu, x.view(), x.view(), GeluApprox::erf); },
               "gelu_residual: argument 'y'");
  // A non-contiguous last dim.
  const int64_t sizes[] = {2, 4}, strides[] = {8, 2};
  TensorView every_other(x.bytes.data(), DType::bf16, Device::cpu(), sizes, strides);
  HostTensor y4(DType::bf16, {2, 4});
  expect_error([&] { relu2(y4.view(), every_other); },
               "relu2: argument 'x': expected a contiguous last dim");
  // Rank 0.
  TensorView scalar(x.bytes.data(), DType::bf16, Device::cpu(), std::span<const int64_t>{});
  expect_error([&] { relu2(scalar, scalar); }, "relu2: argument 'x'");
}

}  // namespace
}  // namespace kiln
