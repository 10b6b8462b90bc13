// CUDA Sinkhorn-Knopp against the reference over n (1 .. 64), batch, iterations, dtypes,
// forward and backward. Outputs NaN-poisoned.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/mhc.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

struct Case {
  bool backward;
  DType dtype;
  int64_t batch;
  int n, iters;
  std::string name() const {
    return std::string(backward ? "bwd_" : "fwd_") + std::string(dtype_name(dtype)) + "_B" +
           std::to_string(batch) + "_n" + std::to_string(n) + "_it" + std::to_string(iters);
  }
};

class SinkhornCuda : public ::testing::TestWithParam<Case> {};

TEST_P(SinkhornCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.batch * 977 + c.n * 31 + c.iters);
  HostTensor l_h(c.dtype, {c.batch, c.n, c.n}), d_h(c.dtype, {c.batch, c.n, c.n});
  l_h.randn(rng);
  d_h.randn(rng);
  Mirrored l(l_h), d(d_h), out(HostTensor(c.dtype, {c.batch, c.n, c.n}));
  l.upload();
  d.upload();
  out.poison();
  HostTensor ref(c.dtype, {c.batch, c.n, c.n});
  const double eps = 1e-6;
  if (c.backward) {
    sinkhorn_knopp_backward(out.view(), d.view(), l.view(), c.iters, eps);
    sinkhorn_knopp_backward(ref.view(), d_h.view(), l_h.view(), c.iters, eps);
  } else {
    sinkhorn_knopp(out.view(), l.view(), c.iters, eps);
    sinkhorn_knopp(ref.view(), l_h.view(), c.iters, eps);
  }
  testing::cuda_ok(cudaDeviceSynchronize(), "sinkhorn_knopp");
  out.download();
  // fp32 through 2 * iters normalisations against float64, then the dtype's rounding.
  const double tol = (c.dtype == DType::f32    ? 1e-5
                      : c.dtype == DType::bf16 ? 1.6e-2
                                               : 2e-3) +
                     (c.backward ? 1e-4 : 2e-6) * c.iters;
  testing::expect_close(out.host, ref, tol, c.backward ? "dlogits" : "out");
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (bool backward : {false, true}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      for (int64_t batch :
           testing::quick_sweep() ? std::vector<int64_t>{1, 5} : std::vector<int64_t>{1, 5, 1000}) {
        for (int n : {1, 2, 3, 4, 8, 33, 64}) {
          for (int iters : {1, 20}) cases.push_back({backward, dtype, batch, n, iters});
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, SinkhornCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
