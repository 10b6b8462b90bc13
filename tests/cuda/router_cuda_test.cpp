// CUDA routers against the reference: ids exactly, weights to fp32 rounding. Logits are a random
// permutation of well-separated levels (biases 0, 2 or 4), so no two selections are within fp32
// rounding of each other and the fp32 kernel must pick exactly what the float64 reference picks.
// Every kind, E up to 1000, k up to 32, DeepSeek-V3 group shapes, f32 and f16 logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/router.h"

namespace kiln {
namespace {

using testing::DeviceBuffer;
using testing::HostTensor;
using testing::Mirrored;

struct Case {
  RouterKind kind;
  DType dtype;
  int64_t rows, experts, k, n_group, topk_group;
  bool renormalize, bias;
  std::string name() const {
    const char* k_name = kind == RouterKind::softmax       ? "softmax"
                         : kind == RouterKind::deepseek_v3 ? "deepseek"
                                                           : "activation";
    return std::string(k_name) + "_" + std::string(dtype_name(dtype)) + "_T" +
           std::to_string(rows) + "_E" + std::to_string(experts) + "_k" + std::to_string(k) + "_g" +
           std::to_string(n_group) + "_" + std::to_string(topk_group) +
           (renormalize ? "_renorm" : "") + (bias ? "_bias" : "");
  }
};

class RouterCuda : public ::testing::TestWithParam<Case> {};

TEST_P(RouterCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.rows * 3 + c.experts + c.k));
  HostTensor logits_h(c.dtype, {c.rows, c.experts});
  std::vector<int> order(c.experts);
  for (int64_t r = 0; r < c.rows; ++r) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    // Distinct levels 1/128 apart in [-4, 4) (exact in f16 and f32).
    for (int64_t e = 0; e < c.experts; ++e) logits_h.set(r, e, order[e] / 128.0 - 4.0);
  }
  std::vector<float> bias(c.experts);
  // Biases of 0, 2 or 4: the selection bands (score in (0, 1) plus bias) never overlap, so the
  // bias decides the band and the distinct scores the order within it.
  for (auto& b : bias) b = static_cast<float>(2 * (rng() % 3));
  DeviceBuffer bias_d(Device::cuda(0), bias.size() * 4);
  bias_d.upload(bias.data(), bias_d.bytes());
  RouterConfig cfg;
  cfg.kind = c.kind;
  cfg.k = c.k;
  cfg.renormalize = c.renormalize;
  cfg.n_group = c.n_group;
  cfg.topk_group = c.topk_group;
  cfg.routed_scaling_factor = 2.5;
  Mirrored logits(logits_h), w(HostTensor(DType::f32, {c.rows, c.k})),
      ids(HostTensor(DType::i32, {c.rows, c.k}));
  logits.upload();
  w.poison();
  ids.poison();
  if (c.bias) cfg.bias = TensorView(bias_d.data(), DType::f32, Device::cuda(0), {c.experts});
  router(w.view(), ids.view(), logits.view(), cfg);
  testing::cuda_ok(cudaDeviceSynchronize(), "router");
  w.download();
  ids.download();
  HostTensor w_ref(DType::f32, {c.rows, c.k}), ids_ref(DType::i32, {c.rows, c.k});
  if (c.bias) cfg.bias = TensorView(bias.data(), DType::f32, Device::cpu(), {c.experts});
  router(w_ref.view(), ids_ref.view(), logits_h.view(), cfg);
  EXPECT_EQ(ids.host.bytes, ids_ref.bytes) << "ids";
  testing::expect_close(w.host, w_ref, 2e-5, "weights");
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (DType dtype : {DType::f32, DType::f16}) {
    for (int64_t rows : testing::sweep_rows()) {
      for (int64_t experts : {8, 64, 256, 1000}) {
        for (int64_t k : {1, 8}) {
          for (bool renorm : {false, true}) {
            cases.push_back({RouterKind::softmax, dtype, rows, experts, k, 1, 1, renorm, false});
          }
          for (bool bias : {false, true}) {
            cases.push_back({RouterKind::activation, dtype, rows, experts, k, 1, 1, false, bias});
          }
        }
      }
      // DeepSeek-V3 (256 experts, 8 groups, 4 kept, k = 8) and other group shapes.
      for (auto [e, g, tg, k] : {std::tuple{256, 8, 4, 8}, std::tuple{64, 4, 1, 2},
                                 std::tuple{64, 32, 2, 4}, std::tuple{1024, 16, 16, 32}}) {
        cases.push_back({RouterKind::deepseek_v3, dtype, rows, e, k, g, tg, false, true});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, RouterCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
