// CUDA bias_dropout_add against the reference: the same (seed, offset) must give the same mask
// on the GPU as on the host (a mismatched element differs by a whole kept value), over shapes,
// dtypes, p, with and without bias, forward and backward (dx and dbias). Outputs NaN-poisoned.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/expect_error.h"
#include "cuda/device_buffer.h"
#include "kiln/ops/dropout.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

struct Case {
  bool backward;
  bool bias;
  double p;
  DType dtype;
  int64_t rows, cols;
  std::string name() const {
    return std::string(backward ? "bwd" : "fwd") + (bias ? "_bias_" : "_") + "p" +
           std::to_string(static_cast<int>(p * 100)) + "_" + std::string(dtype_name(dtype)) + "_M" +
           std::to_string(rows) + "_N" + std::to_string(cols);
  }
};

class DropoutCuda : public ::testing::TestWithParam<Case> {};

TEST_P(DropoutCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.rows * 31 + c.cols);
  HostTensor x_h(c.dtype, {c.rows, c.cols}), res_h(c.dtype, {c.rows, c.cols}),
      b_h(c.dtype, {c.cols});
  x_h.randn(rng);
  res_h.randn(rng);
  b_h.randn(rng);
  Mirrored x(x_h), res(res_h), b(b_h);
  Mirrored out(HostTensor(c.dtype, {c.rows, c.cols})), db(HostTensor(c.dtype, {c.cols}));
  for (Mirrored* m : {&x, &res, &b}) m->upload();
  out.poison();
  db.poison();
  HostTensor out_ref(c.dtype, {c.rows, c.cols}), db_ref(c.dtype, {c.cols});
  const uint64_t seed = 0x1234abcdULL, offset = 77;
  if (c.backward) {
    // The dbias partials must all be written by the kernel: the workspace starts as NaN.
    testing::DeviceBuffer ws(Device::cuda(0), bias_dropout_add_backward_workspace_size(x.view()));
    ws.fill_nan();
    bias_dropout_add_backward(out.view(), c.bias ? db.view() : TensorView(), x.view(), c.p, seed,
                              offset, true, Workspace{ws.data(), ws.bytes()});
    bias_dropout_add_backward(out_ref.view(), c.bias ? db_ref.view() : TensorView(), x_h.view(),
                              c.p, seed, offset, true);
  } else {
    bias_dropout_add(out.view(), x.view(), c.bias ? b.view() : TensorView(), res.view(), c.p, seed,
                     offset, true);
    bias_dropout_add(out_ref.view(), x_h.view(), c.bias ? b_h.view() : TensorView(), res_h.view(),
                     c.p, seed, offset, true);
  }
  testing::cuda_ok(cudaDeviceSynchronize(), "bias_dropout_add");
  out.download();
  db.download();
  const double tol = c.dtype == DType::f32 ? 1e-5 : c.dtype == DType::bf16 ? 1.6e-2 : 2e-3;
  testing::expect_close(out.host, out_ref, tol, c.backward ? "dx" : "out");
  if (c.backward && c.bias) {
    // fp32 sums of `rows` terms against float64.
    testing::expect_close(db.host, db_ref, 4 * (tol + 1e-6 * c.rows), "dbias");
  }
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (bool backward : {false, true}) {
    for (bool bias : {false, true}) {
      for (double p : {0.0, 0.1, 0.5}) {
        for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
          for (int64_t rows : testing::sweep_rows()) {
            for (int64_t cols : {1, 7, 64, 4095, 4096}) {
              cases.push_back({backward, bias, p, dtype, rows, cols});
            }
          }
        }
      }
    }
  }
  // More rows than the dbias kernel has row slots (each slot walks many rows).
  if (!testing::quick_sweep()) {
    for (DType dtype : {DType::f32, DType::bf16})
      cases.push_back({true, true, 0.1, dtype, 16384, 4096});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, DropoutCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

TEST(DropoutCudaErrors, BackwardWorkspaceTooSmallForDbias) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  HostTensor x_h(DType::bf16, {64, 256});
  Mirrored dout(x_h), dx(x_h), db(HostTensor(DType::bf16, {256}));
  const size_t need = bias_dropout_add_backward_workspace_size(dout.view());
  ASSERT_GT(need, 0u);
  testing::DeviceBuffer ws(Device::cuda(0), need);
  testing::expect_error(
      [&] {
        bias_dropout_add_backward(dx.view(), db.view(), dout.view(), 0.1, 1, 2, true,
                                  Workspace{ws.data(), need - 4});
      },
      "bias_dropout_add_backward: argument 'workspace': expected 16-byte aligned, >= " +
          std::to_string(need));
}

}  // namespace
}  // namespace kiln
