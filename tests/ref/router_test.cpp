// The routers' reference against hand-worked rows: softmax (with and without renormalisation),
// DeepSeek-V3's group-limited choice (bias for selection only, routed scaling), the MegaMoE
// activation router (stable softplus), the hash router (bad token ids counted, or uncounted
// without a count tensor), bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/expect_error.h"
#include "kiln/core/receipt.h"
#include "kiln/ops/router.h"

namespace kiln {
namespace {

struct Routed {
  std::vector<float> weights;
  std::vector<int32_t> ids;
};

Routed route(std::vector<float> logits, RouterConfig c) {
  const int64_t e = static_cast<int64_t>(logits.size());
  Routed r{std::vector<float>(c.k, NAN), std::vector<int32_t>(c.k, -7)};
  router(TensorView(r.weights.data(), DType::f32, Device::cpu(), {1, c.k}),
         TensorView(r.ids.data(), DType::i32, Device::cpu(), {1, c.k}),
         TensorView(logits.data(), DType::f32, Device::cpu(), {1, e}), c);
  return r;
}

TEST(Router, Softmax) {
  // p = [1, 3, 2, 1] / 7.
  const std::vector<float> logits{0.f, std::log(3.f), std::log(2.f), 0.f};
  RouterConfig c;
  c.k = 2;
  Routed r = route(logits, c);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(r.weights[0], 3.0 / 7, 1e-6);
  EXPECT_NEAR(r.weights[1], 2.0 / 7, 1e-6);
  c.renormalize = true;
  r = route(logits, c);
  EXPECT_NEAR(r.weights[0], 0.6, 1e-6);
  EXPECT_NEAR(r.weights[1], 0.4, 1e-6);
}

float logit(double s) {
  return static_cast<float>(std::log(s / (1 - s)));
}

TEST(Router, DeepSeekV3GroupLimited) {
  // Sigmoid scores s; 4 groups of 2. Group scores: 1.0, 1.2, 0.99, 0.4 -> groups 1 and 0; then
  // the best 2 of experts 0..3: 0 (0.9) and 2 (0.6, tied with 3: the lower id). Expert 4 (0.95)
  // is in a dropped group.
  std::vector<float> logits;
  for (double s : {0.9, 0.1, 0.6, 0.6, 0.95, 0.04, 0.2, 0.2}) logits.push_back(logit(s));
  std::vector<float> bias(8, 0.f);
  RouterConfig c;
  c.kind = RouterKind::deepseek_v3;
  c.k = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.bias = TensorView(bias.data(), DType::f32, Device::cpu(), {8});
  Routed r = route(logits, c);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 2}));
  EXPECT_NEAR(r.weights[0], 0.9 / 1.5 * 2.5, 1e-5);
  EXPECT_NEAR(r.weights[1], 0.6 / 1.5 * 2.5, 1e-5);
  // The bias moves the selection (expert 1 now first) but not the weights (its unbiased 0.1).
  bias[1] = 1.f;
  r = route(logits, c);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 0}));
  EXPECT_NEAR(r.weights[0], 0.1 / 1.0 * 2.5, 1e-5);
}

TEST(Router, ActivationRouterIsStable) {
  // s = sqrt(softplus(x)): softplus(50) = 50 (no overflow), softplus(-50) = e^-50.
  const std::vector<float> logits{50.f, -50.f, 0.f};
  RouterConfig c;
  c.kind = RouterKind::activation;
  c.k = 3;
  const Routed r = route(logits, c);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 2, 1}));
  const double s0 = std::sqrt(50.0), s2 = std::sqrt(std::log(2.0)), s1 = std::exp(-25.0);
  EXPECT_NEAR(r.weights[0], s0 / (s0 + s1 + s2), 1e-6);
  EXPECT_NEAR(r.weights[1], s2 / (s0 + s1 + s2), 1e-6);
  EXPECT_GT(r.weights[2], 0.f);
}

TEST(Router, HashRouter) {
  std::vector<int32_t> table{3, 1, 0, 2, 2, 2};  // vocab 3, k = 2
  std::vector<int64_t> tokens{2, 5, 0};
  std::vector<float> w(6, NAN);
  std::vector<int32_t> ids(6, -7);
  int32_t bad = 0;
  hash_router(TensorView(w.data(), DType::f32, Device::cpu(), {3, 2}),
              TensorView(ids.data(), DType::i32, Device::cpu(), {3, 2}),
              TensorView(tokens.data(), DType::i64, Device::cpu(), {3}),
              TensorView(table.data(), DType::i32, Device::cpu(), {3, 2}),
              TensorView(&bad, DType::i32, Device::cpu(), {1}));
  EXPECT_EQ(ids, (std::vector<int32_t>{2, 2, -1, -1, 3, 1}));
  EXPECT_EQ(w, (std::vector<float>{0.5f, 0.5f, 0.f, 0.f, 0.5f, 0.5f}));
  EXPECT_EQ(bad, 1);
  // The count may be absent: the same outputs, uncounted.
  std::fill(w.begin(), w.end(), NAN);
  std::fill(ids.begin(), ids.end(), -7);
  hash_router(TensorView(w.data(), DType::f32, Device::cpu(), {3, 2}),
              TensorView(ids.data(), DType::i32, Device::cpu(), {3, 2}),
              TensorView(tokens.data(), DType::i64, Device::cpu(), {3}),
              TensorView(table.data(), DType::i32, Device::cpu(), {3, 2}), TensorView{});
  EXPECT_EQ(ids, (std::vector<int32_t>{2, 2, -1, -1, 3, 1}));
  EXPECT_EQ(w, (std::vector<float>{0.5f, 0.5f, 0.f, 0.f, 0.5f, 0.5f}));
}

// The dense router: the logits are x gate^T (written to logits_out, through its strides), and the
// picks are the router's on those logits. x has strided rows.
TEST(DenseRouter, IsTheGateProductThenTheRouter) {
  constexpr int64_t kT = 3, kH = 5, kE = 4, kPitch = 7;
  std::vector<float> x(kT * kPitch, NAN), gate(kE * kH);
  for (int64_t t = 0; t < kT; ++t)
    for (int64_t h = 0; h < kH; ++h) x[t * kPitch + h] = static_cast<float>((t + 1) * (h - 2)) / 4;
  for (int64_t e = 0; e < kE; ++e)
    for (int64_t h = 0; h < kH; ++h) gate[e * kH + h] = static_cast<float>((e * 3 + h) % 5) - 2;
  const std::vector<int64_t> xs{kT, kH}, xst{kPitch, 1}, ls{kT, kE}, lst{kE + 1, 1};
  std::vector<float> logits(kT * (kE + 1), NAN), w(kT * 2, NAN);
  std::vector<int32_t> ids(kT * 2, -7);
  RouterConfig c;
  c.k = 2;
  c.renormalize = true;
  const Device cpu = Device::cpu();
  dense_router(TensorView(w.data(), DType::f32, cpu, {kT, 2}),
               TensorView(ids.data(), DType::i32, cpu, {kT, 2}),
               TensorView(logits.data(), DType::f32, cpu, ls, lst),
               TensorView(x.data(), DType::f32, cpu, xs, xst),
               TensorView(gate.data(), DType::f32, cpu, {kE, kH}), c, Workspace{});
  EXPECT_EQ(last_receipt().op, "dense_router");
  for (int64_t t = 0; t < kT; ++t) {
    std::vector<float> row(kE);
    for (int64_t e = 0; e < kE; ++e) {
      double dot = 0;
      for (int64_t h = 0; h < kH; ++h) dot += double{x[t * kPitch + h]} * gate[e * kH + h];
      row[e] = static_cast<float>(dot);
      EXPECT_EQ(logits[t * (kE + 1) + e], row[e]) << t << " " << e;
    }
    const Routed want = route(row, c);
    EXPECT_EQ(ids[t * 2], want.ids[0]);
    EXPECT_EQ(ids[t * 2 + 1], want.ids[1]);
    EXPECT_EQ(w[t * 2], want.weights[0]);
    EXPECT_EQ(w[t * 2 + 1], want.weights[1]);
  }
  // Without logits_out the same picks.
  std::vector<int32_t> ids2(kT * 2, -7);
  dense_router(TensorView(w.data(), DType::f32, cpu, {kT, 2}),
               TensorView(ids2.data(), DType::i32, cpu, {kT, 2}), TensorView(),
               TensorView(x.data(), DType::f32, cpu, xs, xst),
               TensorView(gate.data(), DType::f32, cpu, {kE, kH}), c, Workspace{});
  EXPECT_EQ(ids2, ids);
}

TEST(DenseRouter, BadInput) {
  std::vector<float> x(2 * 8), gate(4 * 8), w(4), logits(8);
  std::vector<int32_t> ids(4);
  std::vector<uint16_t> gate16(4 * 8);
  RouterConfig c;
  c.k = 2;
  const Device cpu = Device::cpu();
  auto run = [&](const TensorView& g, const TensorView& l) {
    dense_router(TensorView(w.data(), DType::f32, cpu, {2, 2}),
                 TensorView(ids.data(), DType::i32, cpu, {2, 2}), l,
                 TensorView(x.data(), DType::f32, cpu, {2, 8}), g, c, Workspace{});
  };
  testing::expect_error(
      [&] {
        run(TensorView(gate.data(), DType::f32, cpu, {4, 7}), {});
      },
      "dense_router: argument 'gate': expected [E, H = 8], got [4, 7]");
  testing::expect_error(
      [&] {
        run(TensorView(gate16.data(), DType::bf16, cpu, {4, 8}), {});
      },
      "dense_router: argument 'gate'");
  testing::expect_error(
      [&] {
        run(TensorView(gate.data(), DType::f32, cpu, {4, 8}),
            TensorView(logits.data(), DType::f32, cpu, {2, 3}));
      },
      "dense_router: argument 'logits_out': expected f32 [2, 4]");
  c.k = 5;
  testing::expect_error(
      [&] {
        run(TensorView(gate.data(), DType::f32, cpu, {4, 8}), {});
      },
      "dense_router: argument 'k'");
}

TEST(Router, BadInput) {
  const std::vector<float> logits(8, 0.f);
  RouterConfig c;
  c.kind = RouterKind::deepseek_v3;
  c.k = 2;
  testing::expect_error([&] { route(logits, c); },
                        "router: argument 'bias': expected f32 [E] for the deepseek_v3 router, got "
                        "absent");
  std::vector<float> bias(8, 0.f);
  c.bias = TensorView(bias.data(), DType::f32, Device::cpu(), {8});
  c.n_group = 3;
  testing::expect_error([&] { route(logits, c); },
                        "argument 'n_group': expected a divisor of E = 8, got 3");
  RouterConfig s;
  s.k = 9;
  testing::expect_error([&] { route(logits, s); },
                        "router: argument 'k': expected 1 <= k <= min(E, 32), got 9");
  s.k = 2;
  s.bias = c.bias;
  testing::expect_error([&] { route(logits, s); },
                        "argument 'bias': expected absent for the softmax router");
}

}  // namespace
}  // namespace kiln
