// Bad input to the normalization ops: each rule throws kiln::Error naming op, argument,
// expected and given. Checks run before any data is touched, so fake device pointers are safe.
#include <gtest/gtest.h>

#include <string>

#include "common/host_tensor.h"
#include "kiln/ops/norm.h"

namespace kiln {
namespace {

using testing::HostTensor;

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no kiln::Error thrown)";
}

void expect_names(const std::string& msg, const std::string& op, const std::string& arg) {
  EXPECT_NE(msg.find(op + ":"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'" + arg + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected"), std::string::npos) << msg;
  EXPECT_NE(msg.find("got"), std::string::npos) << msg;
}

TEST(NormErrors, MismatchedN) {
  HostTensor x(DType::bf16, {4, 64}), w(DType::bf16, {63}), y(DType::bf16, {4, 64});
  const std::string msg = error_of([&] { rms_norm(y.view(), x.view(), w.view(), 1e-6); });
  expect_names(msg, "rms_norm", "weight");
  EXPECT_NE(msg.find("[64]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[63]"), std::string::npos) << msg;
}

TEST(NormErrors, MismatchedOutputShape) {
  HostTensor x(DType::f32, {4, 64}), y(DType::f32, {4, 65});
  expect_names(error_of([&] { layer_norm(y.view(), x.view(), {}, {}, 1e-5); }), "layer_norm", "y");
}

TEST(NormErrors, UnsupportedDtype) {
  HostTensor x(DType::i32, {4, 64}), y(DType::i32, {4, 64});
  const std::string msg = error_of([&] { rms_norm(y.view(), x.view(), {}, 1e-6); });
  expect_names(msg, "rms_norm", "x");
  EXPECT_NE(msg.find("i32"), std::string::npos) << msg;
}

TEST(NormErrors, WeightDtypeNeitherXsNorF32) {
  HostTensor x(DType::bf16, {4, 8}), w(DType::f16, {8}), y(DType::bf16, {4, 8});
  expect_names(error_of([&] { rms_norm(y.view(), x.view(), w.view(), 1e-6); }), "rms_norm",
               "weight");
}

TEST(NormErrors, OutputDtypeDiffers) {
  HostTensor x(DType::bf16, {4, 8}), y(DType::f32, {4, 8});
  expect_names(error_of([&] { rms_norm(y.view(), x.view(), {}, 1e-6); }), "rms_norm", "y");
}

TEST(NormErrors, TensorsOnDifferentDevices) {
  HostTensor x(DType::bf16, {4, 8}), w(DType::bf16, {8}), y(DType::bf16, {4, 8});
  const std::string msg = error_of([&] {
    rms_norm(y.view(), x.view(), w.view(reinterpret_cast<void*>(0x1000), Device::cuda(0)), 1e-6);
  });
  expect_names(msg, "rms_norm", "weight");
  EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
}

TEST(NormErrors, NonContiguousLastDim) {
  HostTensor x(DType::f32, {4, 8}), y(DType::f32, {4, 8});
  const int64_t sizes[] = {4, 4}, strides[] = {8, 2};
  TensorView xs(x.bytes.data(), DType::f32, Device::cpu(), sizes, strides);
  HostTensor ys(DType::f32, {4, 4});
  const std::string msg = error_of([&] { rms_norm(ys.view(), xs, {}, 1e-6); });
  expect_names(msg, "rms_norm", "x");
  EXPECT_NE(msg.find("contiguous last dim"), std::string::npos) << msg;
}

TEST(NormErrors, LeadingDimsThatDoNotCollapse) {
  HostTensor x(DType::f32, {2, 3, 8}), y(DType::f32, {2, 3, 8});
  const int64_t sizes[] = {2, 3, 8}, strides[] = {100, 8, 1};  // outer stride != 3 * 8
  TensorView xs(x.bytes.data(), DType::f32, Device::cpu(), sizes, strides);
  expect_names(error_of([&] { rms_norm(y.view(), xs, {}, 1e-6); }), "rms_norm", "x");
}

TEST(NormErrors, WrongRank) {
  HostTensor x(DType::f32, {4, 8}), y(DType::f32, {4, 8}), w(DType::f32, {2, 4});
  TensorView scalar(x.bytes.data(), DType::f32, Device::cpu(), std::span<const int64_t>{});
  expect_names(error_of([&] { rms_norm(y.view(), scalar, {}, 1e-6); }), "rms_norm", "x");
  expect_names(error_of([&] { rms_norm(y.view(), x.view(), w.view(), 1e-6); }), "rms_norm",
               "weight");
}

TEST(NormErrors, ResidualPairAndBackwardRules) {
  HostTensor x(DType::f32, {4, 8}), y(DType::f32, {4, 8}), r(DType::f32, {4, 8});
  HostTensor dw(DType::f32, {8}), db(DType::f32, {8});
  expect_names(error_of([&] { add_rms_norm(y.view(), {}, x.view(), r.view(), {}, 1e-6); }),
               "add_rms_norm", "residual_out");
  expect_names(error_of([&] {
                 rms_norm_backward(y.view(), dw.view(), x.view(), x.view(), {}, 1e-6, {}, {});
               }),
               "rms_norm_backward", "dweight");
  expect_names(error_of([&] { rms_norm(y.view(), x.view(), {}, -1.0); }), "rms_norm", "eps");
}

}  // namespace
}  // namespace kiln
