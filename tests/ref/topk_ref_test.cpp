// topk's reference against the math: hand-worked rows (ties to the lower index, NaN first, the
// softmax of the picks) and every bad input's message.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "common/expect_error.h"
#include "kiln/ops/topk.h"

namespace kiln {
namespace {

struct Row {
  std::vector<float> values;
  std::vector<int32_t> indices;
};

Row run(std::vector<float> scores, int64_t k, bool softmax) {
  Row r{std::vector<float>(k, NAN), std::vector<int32_t>(k, -7)};
  const int64_t e = static_cast<int64_t>(scores.size());
  topk(TensorView(r.values.data(), DType::f32, Device::cpu(), {1, k}),
       TensorView(r.indices.data(), DType::i32, Device::cpu(), {1, k}),
       TensorView(scores.data(), DType::f32, Device::cpu(), {1, e}), k, softmax);
  return r;
}

TEST(TopkRef, SortedDescendingTiesToTheLowerIndex) {
  const Row r = run({0.5f, 2.f, -1.f, 2.f, 0.5f, 3.f}, 4, false);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{5, 1, 3, 0}));
  EXPECT_EQ(r.values, (std::vector<float>{3.f, 2.f, 2.f, 0.5f}));
}

TEST(TopkRef, NanRanksFirst) {
  const Row r = run({1.f, NAN, 4.f, NAN}, 3, false);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{1, 3, 2}));
  EXPECT_TRUE(std::isnan(r.values[0]) && std::isnan(r.values[1]));
}

TEST(TopkRef, SoftmaxOfThePicks) {
  const Row r = run({0.f, std::log(3.f), -5.f}, 2, true);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{1, 0}));
  EXPECT_NEAR(r.values[0], 0.75f, 1e-6);
  EXPECT_NEAR(r.values[1], 0.25f, 1e-6);
}

TEST(TopkRef, KEqualsE) {
  const Row r = run({1.f, 3.f, 2.f}, 3, false);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{1, 2, 0}));
}

TEST(TopkRef, BadInput) {
  std::vector<float> s(8), v(8);
  std::vector<int32_t> i(8);
  const TensorView scores(s.data(), DType::f32, Device::cpu(), {2, 4});
  auto call = [&](int64_t k, const TensorView& values, const TensorView& indices) {
    topk(values, indices, scores, k, false);
  };
  const TensorView v2(v.data(), DType::f32, Device::cpu(), {2, 2}),
      i2(i.data(), DType::i32, Device::cpu(), {2, 2});
  testing::expect_error([&] { call(5, v2, i2); },
                        "topk: argument 'k': expected 1 <= k <= min(E, 32) = 4, got 5");
  testing::expect_error([&] { call(3, v2, i2); },
                        "topk: argument 'values': expected shape [2, 3], got");
  const TensorView i64(i.data(), DType::i64, Device::cpu(), {2, 2});
  testing::expect_error([&] { call(2, v2, i64); }, "topk: argument 'indices'");
  std::vector<float> wide(1025);
  testing::expect_error(
      [&] {
        topk(TensorView(v.data(), DType::f32, Device::cpu(), {1, 1}),
             TensorView(i.data(), DType::i32, Device::cpu(), {1, 1}),
             TensorView(wide.data(), DType::f32, Device::cpu(), {1, 1025}), 1, false);
      },
      "topk: argument 'scores': expected E = scores.size(1) in [1, 1024], got 1025");
}

}  // namespace
}  // namespace kiln
