// CUDA moe_sum against the reference over tokens, k, N, dtypes, weight dtypes, forward and
// backward (dx, dweights). Outputs NaN-poisoned.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/moe_sum.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

enum class Weights { none, same, f32 };

struct Case {
  bool backward;
  Weights weights;
  DType dtype;
  int64_t tokens, k, cols;
  std::string name() const {
    const char* ws[] = {"now", "w", "w32"};
    return std::string(backward ? "bwd_" : "fwd_") + ws[static_cast<int>(weights)] + "_" +
           std::string(dtype_name(dtype)) + "_T" + std::to_string(tokens) + "_k" +
           std::to_string(k) + "_N" + std::to_string(cols);
  }
};

class MoeSumCuda : public ::testing::TestWithParam<Case> {};

bool close(double got, double want, double tol) {
  return std::abs(got - want) <= tol * (1 + std::abs(want));
}

TEST_P(MoeSumCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.tokens * 131 + c.k * 7 + c.cols);
  const DType wdt = c.weights == Weights::f32 ? DType::f32 : c.dtype;
  HostTensor x_h(c.dtype, {c.tokens, c.k, c.cols}), w_h(wdt, {c.tokens, c.k});
  HostTensor g_h(c.dtype, {c.tokens, c.cols});
  x_h.randn(rng);
  w_h.randn(rng);
  g_h.randn(rng);
  Mirrored x(x_h), w(w_h), g(g_h);
  for (Mirrored* m : {&x, &w, &g}) m->upload();
  const bool has_w = c.weights != Weights::none;
  Mirrored out(HostTensor(c.dtype, {c.tokens, c.cols})),
      dx(HostTensor(c.dtype, {c.tokens, c.k, c.cols}));
  Mirrored dw(HostTensor(wdt, {c.tokens, c.k}));
  for (Mirrored* m : {&out, &dx, &dw}) m->poison();
  HostTensor out_r(c.dtype, {c.tokens, c.cols}), dx_r(c.dtype, {c.tokens, c.k, c.cols}),
      dw_r(wdt, {c.tokens, c.k});
  if (c.backward) {
    moe_sum_backward(dx.view(), has_w ? dw.view() : TensorView(), g.view(), x.view(),
                     has_w ? w.view() : TensorView());
    moe_sum_backward(dx_r.view(), has_w ? dw_r.view() : TensorView(), g_h.view(), x_h.view(),
                     has_w ? w_h.view() : TensorView());
  } else {
    moe_sum(out.view(), x.view(), has_w ? w.view() : TensorView());
    moe_sum(out_r.view(), x_h.view(), has_w ? w_h.view() : TensorView());
  }
  testing::cuda_ok(cudaDeviceSynchronize(), "moe_sum");
  for (Mirrored* m : {&out, &dx, &dw}) m->download();
  const double tol = c.dtype == DType::f32 ? 1e-5 : c.dtype == DType::bf16 ? 1.6e-2 : 2e-3;
  int bad = 0;
  auto check = [&](double got, double want, const std::string& what, double t) {
    if (bad < 5 && !close(got, want, t)) {
      ADD_FAILURE() << what << ": got " << got << ", want " << want;
      ++bad;
    }
  };
  if (!c.backward) {
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t n = 0; n < c.cols; ++n) check(out.host.at(t, n), out_r.at(t, n), "out", tol);
    }
    return;
  }
  for (int64_t r = 0; r < c.tokens * c.k; ++r) {
    for (int64_t n = 0; n < c.cols; ++n) check(dx.host.at(r, n), dx_r.at(r, n), "dx", tol);
  }
  if (has_w) {
    // A dot product of N terms summed in fp32 (against float64), then rounded to the weights'
    // dtype: bound by the dtype's rounding of the result plus 1e-5 of the sum of |terms|.
    const double wtol = wdt == DType::f32 ? 1e-6 : tol;
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t j = 0; j < c.k; ++j) {
        double mass = 0;
        for (int64_t n = 0; n < c.cols; ++n)
          mass += std::abs(g_h.at(t, n) * x_h.at(t * c.k + j, n));
        const double got = dw.host.at(t, j), want = dw_r.at(t, j);
        if (bad < 5 && !(std::abs(got - want) <= wtol * std::abs(want) + 1e-5 * mass + 1e-6)) {
          ADD_FAILURE() << "dweights[" << t << ", " << j << "]: got " << got << ", want " << want;
          ++bad;
        }
      }
    }
  }
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (bool backward : {false, true}) {
    for (Weights w : {Weights::none, Weights::same, Weights::f32}) {
      for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
        if (w == Weights::f32 && dtype == DType::f32) continue;
        for (int64_t tokens : testing::sweep_rows()) {
          for (int64_t k : {1, 2, 8, 16}) {
            for (int64_t cols : {1, 7, 64, 4096})
              cases.push_back({backward, w, dtype, tokens, k, cols});
          }
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, MoeSumCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
