// CUDA activations against the float64 reference, over a sweep of shapes, every op, dtype and
// direction, split and packed (strided halves) inputs. Outputs are poisoned (NaN) first.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/activation.h"

namespace kiln {
namespace {

using testing::HostTensor;
using testing::Mirrored;

enum class Op { relu2, swiglu, gelu_erf, gelu_tanh };

struct Case {
  Op op;
  bool backward;
  bool packed;  // gated ops: gate/up (h/g) as the halves of one [rows, 2N] tensor
  DType dtype;
  int64_t rows, cols;
  std::string name() const {
    const char* ops[] = {"relu2", "swiglu", "gelu_erf", "gelu_tanh"};
    return std::string(ops[static_cast<int>(op)]) + (backward ? "_bwd" : "_fwd") +
           (packed ? "_packed_" : "_") + std::string(dtype_name(dtype)) + "_M" +
           std::to_string(rows) + "_N" + std::to_string(cols);
  }
};

class ActivationCuda : public ::testing::TestWithParam<Case> {};

// Runs the op on `device` over views of the given tensors.
void run(const Case& c, Device device, TensorView a, TensorView b, TensorView packed, TensorView dy,
         TensorView out0, TensorView out1, TensorView out_packed) {
  (void)device;
  const GeluApprox approx = c.op == Op::gelu_tanh ? GeluApprox::tanh : GeluApprox::erf;
  if (c.op == Op::relu2) {
    c.backward ? relu2_backward(out0, dy, a) : relu2(out0, a);
  } else if (c.op == Op::swiglu) {
    if (c.packed) {
      c.backward ? swiglu_backward(out_packed, dy, packed) : swiglu(out0, packed);
    } else {
      c.backward ? swiglu_backward(out0, out1, dy, a, b) : swiglu(out0, a, b);
    }
  } else if (c.packed) {
    c.backward ? gelu_residual_backward(out_packed, dy, packed, approx)
               : gelu_residual(out0, packed, approx);
  } else {
    c.backward ? gelu_residual_backward(out0, out1, dy, a, b, approx)
               : gelu_residual(out0, a, b, approx);
  }
}

TEST_P(ActivationCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937_64 rng(c.rows * 7919 + c.cols);
  const int64_t n = c.cols;
  // Inputs: the packed tensor holds a | b; the split inputs are copies of its halves.
  HostTensor packed_h(c.dtype, {c.rows, 2 * n}), dy_h(c.dtype, {c.rows, n});
  packed_h.randn(rng, 0.0, 2.0);
  dy_h.randn(rng);
  HostTensor a_h(c.dtype, {c.rows, n}), b_h(c.dtype, {c.rows, n});
  for (int64_t r = 0; r < c.rows; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      a_h.set(r, j, packed_h.at(r, j));
      b_h.set(r, j, packed_h.at(r, n + j));
    }
  }
  Mirrored a(a_h), b(b_h), packed(packed_h), dy(dy_h);
  Mirrored out0(HostTensor(c.dtype, {c.rows, n})), out1(HostTensor(c.dtype, {c.rows, n}));
  Mirrored out_packed(HostTensor(c.dtype, {c.rows, 2 * n}));
  for (Mirrored* m : {&a, &b, &packed, &dy}) m->upload();
  for (Mirrored* m : {&out0, &out1, &out_packed}) m->poison();
  run(c, Device::cuda(0), a.view(), b.view(), packed.view(), dy.view(), out0.view(), out1.view(),
      out_packed.view());
  testing::cuda_ok(cudaDeviceSynchronize(), "activation");
  EXPECT_EQ(last_receipt().backend, "cuda");
  for (Mirrored* m : {&out0, &out1, &out_packed}) m->download();

  HostTensor r0(c.dtype, {c.rows, n}), r1(c.dtype, {c.rows, n}), rp(c.dtype, {c.rows, 2 * n});
  run(c, Device::cpu(), a_h.view(), b_h.view(), packed_h.view(), dy_h.view(), r0.view(), r1.view(),
      rp.view());
  // One rounding of the output dtype plus fp32 math (expf, erff, tanhf: a few ulp).
  const double tol = c.dtype == DType::f32 ? 2e-5 : c.dtype == DType::bf16 ? 1.6e-2 : 2e-3;
  const bool two_outputs = c.backward && c.op != Op::relu2;
  int64_t bad = 0;
  for (int64_t r = 0; r < c.rows && bad < 5; ++r) {
    for (int64_t j = 0; j < n && bad < 5; ++j) {
      auto check = [&](double got, double want, const char* what) {
        if (!(std::abs(got - want) <= tol * (1 + std::abs(want)))) {
          ADD_FAILURE() << what << " at (" << r << ", " << j << "): got " << got << ", want "
                        << want;
          ++bad;
        }
      };
      if (c.packed && c.backward) {
        check(out_packed.host.at(r, j), rp.at(r, j), "d(first half)");
        check(out_packed.host.at(r, n + j), rp.at(r, n + j), "d(second half)");
      } else {
        check(out0.host.at(r, j), r0.at(r, j), "out0");
        if (two_outputs) check(out1.host.at(r, j), r1.at(r, j), "out1");
      }
    }
  }
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (Op op : {Op::relu2, Op::swiglu, Op::gelu_erf, Op::gelu_tanh}) {
    for (bool backward : {false, true}) {
      for (bool packed : {false, true}) {
        if (packed && op == Op::relu2) continue;
        for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
          for (int64_t rows : testing::sweep_rows()) {
            for (int64_t cols : {1, 7, 64, 4095, 4096}) {
              cases.push_back({op, backward, packed, dtype, rows, cols});
            }
          }
        }
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, ActivationCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
