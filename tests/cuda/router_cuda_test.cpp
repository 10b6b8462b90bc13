// CUDA routers against the reference: ids exactly, weights to fp32 rounding. Logits are a random
// permutation of well-separated levels (biases 0, 2 or 4), so no two selections are within fp32
// rounding of each other and the fp32 kernel must pick exactly what the float64 reference picks.
// Every kind, E up to 1000, k up to 32, DeepSeek-V3 group shapes, f32 and f16 logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/core/receipt.h"
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

// Row `row` of logits: the levels base + i / 128 (exact in f16 and f32), i = 0 .. E - 1 shuffled.
void set_shuffled_levels(HostTensor& logits, int64_t row, double base, std::mt19937& rng) {
  std::vector<int> order(logits.cols());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  for (int64_t e = 0; e < logits.cols(); ++e) logits.set(row, e, base + order[e] / 128.0);
}

// The CUDA router's outputs (poisoned before the run) and the reference's on the same logits;
// `bias` (null: none) goes to each on its own device.
struct Routed {
  HostTensor w, ids, w_ref, ids_ref;
};
Routed route_both(HostTensor& logits_h, RouterConfig cfg, std::vector<float>* bias) {
  const int64_t rows = logits_h.rows(), experts = logits_h.cols();
  DeviceBuffer bias_d(Device::cuda(0), bias ? bias->size() * 4 : 4);
  if (bias) bias_d.upload(bias->data(), bias_d.bytes());
  Mirrored logits(logits_h), w(HostTensor(DType::f32, {rows, cfg.k})),
      ids(HostTensor(DType::i32, {rows, cfg.k}));
  logits.upload();
  w.poison();
  ids.poison();
  if (bias) cfg.bias = TensorView(bias_d.data(), DType::f32, Device::cuda(0), {experts});
  router(w.view(), ids.view(), logits.view(), cfg);
  testing::cuda_ok(cudaDeviceSynchronize(), "router");
  w.download();
  ids.download();
  Routed out{w.host, ids.host, HostTensor(DType::f32, {rows, cfg.k}),
             HostTensor(DType::i32, {rows, cfg.k})};
  if (bias) cfg.bias = TensorView(bias->data(), DType::f32, Device::cpu(), {experts});
  router(out.w_ref.view(), out.ids_ref.view(), logits_h.view(), cfg);
  return out;
}

TEST_P(RouterCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.rows * 3 + c.experts + c.k));
  HostTensor logits_h(c.dtype, {c.rows, c.experts});
  for (int64_t r = 0; r < c.rows; ++r) set_shuffled_levels(logits_h, r, -4.0, rng);
  std::vector<float> bias(c.experts);
  // Biases of 0, 2 or 4: the selection bands (score in (0, 1) plus bias) never overlap, so the
  // bias decides the band and the distinct scores the order within it.
  for (auto& b : bias) b = static_cast<float>(2 * (rng() % 3));
  RouterConfig cfg;
  cfg.kind = c.kind;
  cfg.k = c.k;
  cfg.renormalize = c.renormalize;
  cfg.n_group = c.n_group;
  cfg.topk_group = c.topk_group;
  cfg.routed_scaling_factor = 2.5;
  const Routed r = route_both(logits_h, cfg, c.bias ? &bias : nullptr);
  EXPECT_EQ(r.ids.bytes, r.ids_ref.bytes) << "ids";
  testing::expect_close(r.w, r.w_ref, 2e-5, "weights");
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

// Rows the kernels treat on paths of their own, against the reference (ids exactly; weights
// both NaN or within 2e-5): a NaN logit, +inf, -inf in all but three places, logits far
// below zero (the activation score's e^(x/2) branch, sigmoid near 0), and a row all NaN. Every
// kind, the run layout (E = 256) and the strided one (E = 1000, no groups).
TEST(RouterCudaSpecialValues, MatchReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  constexpr int64_t kRows = 6, kK = 8;
  for (int64_t experts : {256, 1000}) {
    std::mt19937 rng(static_cast<uint32_t>(experts));
    HostTensor logits_h(DType::f32, {kRows, experts});
    // Row 4: far below zero, 1/128 apart.
    for (int64_t r = 0; r < kRows; ++r)
      set_shuffled_levels(logits_h, r, r == 4 ? -70.0 : -4.0, rng);
    logits_h.set(1, 100, NAN);
    logits_h.set(2, 37, INFINITY);
    for (int64_t e = 3; e < experts; ++e) logits_h.set(3, e, -INFINITY);
    for (int64_t e = 0; e < experts; ++e) logits_h.set(5, e, NAN);
    // A zero bias: a band offset would round row 4's tiny scores away in fp32 and not quite in
    // float64 (the sweep covers the bias).
    std::vector<float> bias(experts, 0.f);
    for (RouterKind kind : {RouterKind::softmax, RouterKind::activation, RouterKind::deepseek_v3}) {
      if (kind == RouterKind::deepseek_v3 && experts != 256) continue;
      for (bool renormalize : {false, true}) {
        if (kind != RouterKind::softmax && renormalize) continue;
        SCOPED_TRACE("E " + std::to_string(experts) + " kind " +
                     std::to_string(static_cast<int>(kind)) + (renormalize ? " renormalize" : ""));
        RouterConfig cfg;
        cfg.kind = kind;
        cfg.k = kK;
        cfg.renormalize = renormalize;
        cfg.n_group = kind == RouterKind::deepseek_v3 ? 8 : 1;
        cfg.topk_group = kind == RouterKind::deepseek_v3 ? 4 : 1;
        cfg.routed_scaling_factor = 2.5;
        const Routed out = route_both(logits_h, cfg, kind != RouterKind::softmax ? &bias : nullptr);
        for (int64_t r = 0; r < kRows; ++r) {
          for (int64_t j = 0; j < kK; ++j) {
            EXPECT_EQ(out.ids.at(r, j), out.ids_ref.at(r, j)) << "ids (" << r << ", " << j << ")";
            const double g = out.w.at(r, j), want = out.w_ref.at(r, j);
            const bool both_nan = std::isnan(g) && std::isnan(want);
            EXPECT_TRUE(both_nan || std::abs(g - want) <= 2e-5 * (1 + std::abs(want)))
                << "weight (" << r << ", " << j << "): got " << g << ", want " << want;
          }
        }
      }
    }
  }
}

// The dense router, both paths (fused up to 16 tokens, cuBLAS + router above): (A) on random x
// and gate, logits_out against the float64 products (tolerance: fp32 sums in another order);
// (B) on x and gate built so the logits are exact in any summation order and distinct
// (x[t, e] a permutation of levels, gate the identity on the first E columns and zero past them,
// x random there), ids exactly and weights to fp32 rounding against the reference.
struct DenseCase {
  RouterKind kind;
  DType dtype;
  int64_t rows, experts, hidden;
  std::string name() const {
    const char* k = kind == RouterKind::softmax       ? "softmax"
                    : kind == RouterKind::deepseek_v3 ? "deepseek"
                                                      : "activation";
    return std::string(k) + "_" + std::string(dtype_name(dtype)) + "_T" + std::to_string(rows) +
           "_E" + std::to_string(experts) + "_H" + std::to_string(hidden);
  }
};

class DenseRouterCuda : public ::testing::TestWithParam<DenseCase> {};

TEST_P(DenseRouterCuda, MatchesReference) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const DenseCase c = GetParam();
  const int64_t T = c.rows, E = c.experts, H = c.hidden, k = std::min<int64_t>(8, E);
  const int64_t pitch = H + 8;  // x's rows strided
  RouterConfig cfg;
  cfg.kind = c.kind;
  cfg.k = k;
  cfg.renormalize = true;
  std::vector<float> bias(E, 0.f);
  DeviceBuffer bias_d(Device::cuda(0), E * 4);
  bias_d.upload(bias.data(), bias_d.bytes());
  if (c.kind == RouterKind::deepseek_v3) {
    cfg.n_group = E >= 64 ? 8 : 1;
    cfg.topk_group = E >= 64 ? 4 : 1;
    cfg.routed_scaling_factor = 2.5;
  }
  std::mt19937_64 rng(static_cast<uint64_t>(T * 7 + E + H));
  const Device gpu = Device::cuda(0);
  DeviceBuffer ws(gpu, std::max<size_t>(16, dense_router_workspace_size(T, E, H, gpu)));
  for (const bool structured : {false, true}) {
    SCOPED_TRACE(structured ? "structured (exact, distinct logits)" : "random");
    HostTensor x(c.dtype, {T, H}, pitch), gate(c.dtype, {E, H});
    x.randn(rng);
    gate.randn(rng, 0.0, 1.0 / std::sqrt(static_cast<double>(H)));
    if (structured) {
      // Levels 1/64 apart in [-2, 2) (1/256 apart for E > 256, f32 only): exact in bf16.
      const double step = E > 256 ? 1.0 / 256 : 1.0 / 64;
      std::vector<int> order(E);
      for (int64_t t = 0; t < T; ++t) {
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        for (int64_t e = 0; e < E; ++e) x.set(t, e, order[e] * step - 2.0);
      }
      for (int64_t e = 0; e < E; ++e)
        for (int64_t h = 0; h < H; ++h) gate.set(e, h, h == e ? 1.0 : 0.0);
    }
    Mirrored dx(x), dgate(gate), w(HostTensor(DType::f32, {T, k})),
        ids(HostTensor(DType::i32, {T, k})), logits(HostTensor(DType::f32, {T, E}));
    dx.upload();
    dgate.upload();
    w.poison();
    ids.poison();
    logits.poison();
    RouterConfig dcfg = cfg;
    if (c.kind == RouterKind::deepseek_v3)
      dcfg.bias = TensorView(bias_d.data(), DType::f32, gpu, {E});
    dense_router(w.view(), ids.view(), logits.view(), dx.view(), dgate.view(), dcfg,
                 Workspace{ws.data(), ws.bytes()});
    const std::string variant = last_receipt().variant;
    EXPECT_EQ(
        variant.rfind(T <= 16 ? "dense_router<fused_gemv," : "dense_router<cublas_gemm_f32,", 0),
        0u)
        << variant;
    testing::cuda_ok(cudaDeviceSynchronize(), "dense_router");
    w.download();
    ids.download();
    logits.download();
    HostTensor w_ref(DType::f32, {T, k}), ids_ref(DType::i32, {T, k}),
        logits_ref(DType::f32, {T, E});
    RouterConfig hcfg = cfg;
    if (c.kind == RouterKind::deepseek_v3)
      hcfg.bias = TensorView(bias.data(), DType::f32, Device::cpu(), {E});
    dense_router(w_ref.view(), ids_ref.view(), logits_ref.view(), x.view(), gate.view(), hcfg,
                 Workspace{});
    testing::expect_close(logits.host, logits_ref, 1e-5, "logits");
    if (structured) {
      EXPECT_EQ(logits.host.bytes, logits_ref.bytes) << "exact logits";
      EXPECT_EQ(ids.host.bytes, ids_ref.bytes) << "ids";
      testing::expect_close(w.host, w_ref, 2e-5, "weights");
    }
  }
}

std::vector<DenseCase> dense_sweep() {
  std::vector<DenseCase> cases;
  for (DType dtype : {DType::f32, DType::bf16}) {
    for (int64_t rows : {1, 5, 16, 17, 300}) {
      for (auto [e, h] :
           {std::pair{8, 100}, std::pair{64, 1024}, std::pair{256, 7168}, std::pair{256, 1000}}) {
        for (RouterKind kind : {RouterKind::softmax, RouterKind::deepseek_v3}) {
          cases.push_back({kind, dtype, rows, e, h});
        }
      }
      cases.push_back({RouterKind::activation, dtype, rows, 64, 1027});
    }
  }
  // f16 (the fused path's MMAs in f16; the cuBLAS path at 17): the aligned and the element path.
  for (int64_t rows : {1, 16, 17}) {
    for (auto [e, h] : {std::pair{256, 7168}, std::pair{8, 100}}) {
      cases.push_back({RouterKind::deepseek_v3, DType::f16, rows, e, h});
    }
  }
  // E = 1000 (32 candidates a lane), f32: both paths.
  cases.push_back({RouterKind::softmax, DType::f32, 3, 1000, 1024});
  cases.push_back({RouterKind::activation, DType::f32, 40, 1000, 1024});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, DenseRouterCuda, ::testing::ValuesIn(dense_sweep()),
                         [](const ::testing::TestParamInfo<DenseCase>& info) {
                           return info.param.name();
                         });

// The hash router: exact ids and weights, and the bad token count, against the reference; token
// ids include negatives and ids past the table; the table and the outputs are strided views (a
// transposed table, output rows with a pad) in the second layout.
struct HashCase {
  int64_t rows, k;
  bool strided;
};

class HashRouterCuda : public ::testing::TestWithParam<HashCase> {};

TensorView strided(void* data, DType dtype, const std::vector<int64_t>& sizes,
                   const std::vector<int64_t>& strides) {
  return TensorView(data, dtype, Device::cuda(0), sizes, strides);
}

TEST_P(HashRouterCuda, MatchesReferenceAndCountsBadTokens) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const HashCase c = GetParam();
  constexpr int64_t kVocab = 5000;
  std::mt19937_64 rng(static_cast<uint64_t>(c.rows * 13 + c.k));
  std::vector<int32_t> table(kVocab * c.k);
  for (auto& v : table) v = static_cast<int32_t>(rng() % 256);
  std::vector<int64_t> tokens(c.rows);
  for (int64_t t = 0; t < c.rows; ++t) {
    const uint64_t r = rng() % 10;
    tokens[t] = r == 0   ? -1 - static_cast<int64_t>(rng() % 3)
                : r == 1 ? kVocab + static_cast<int64_t>(rng() % 3)
                         : static_cast<int64_t>(rng() % kVocab);
  }
  // Every sweep has both kinds when it has two tokens: the first good, the last past the table.
  tokens[0] = static_cast<int64_t>(rng() % kVocab);
  if (c.rows > 1) tokens[c.rows - 1] = kVocab;
  // The strided layout: the table stored [k, vocab] and viewed as [vocab, k]; output rows k + 3
  // apart.
  const int64_t pitch = c.strided ? c.k + 3 : c.k;
  const std::vector<int64_t> table_strides =
      c.strided ? std::vector<int64_t>{1, kVocab} : std::vector<int64_t>{c.k, 1};
  std::vector<int32_t> table_stored(table.size());
  for (int64_t v = 0; v < kVocab; ++v)
    for (int64_t j = 0; j < c.k; ++j)
      table_stored[v * table_strides[0] + j * table_strides[1]] = table[v * c.k + j];
  DeviceBuffer table_d(Device::cuda(0), table.size() * 4), tokens_d(Device::cuda(0), c.rows * 8),
      w_d(Device::cuda(0), c.rows * pitch * 4), ids_d(Device::cuda(0), c.rows * pitch * 4),
      bad_d(Device::cuda(0), 4);
  table_d.upload(table_stored.data(), table_d.bytes());
  tokens_d.upload(tokens.data(), tokens_d.bytes());
  w_d.fill_nan();
  ids_d.fill_nan();
  const int32_t zero = 0;
  bad_d.upload(&zero, 4);
  const Device gpu = Device::cuda(0);
  hash_router(strided(w_d.data(), DType::f32, {c.rows, c.k}, {pitch, 1}),
              strided(ids_d.data(), DType::i32, {c.rows, c.k}, {pitch, 1}),
              TensorView(tokens_d.data(), DType::i64, gpu, {c.rows}),
              strided(table_d.data(), DType::i32, {kVocab, c.k}, table_strides),
              TensorView(bad_d.data(), DType::i32, gpu, {1}));
  EXPECT_EQ(last_receipt().backend, "cuda");
  std::vector<float> w(c.rows * pitch), w_ref(c.rows * c.k);
  std::vector<int32_t> ids(c.rows * pitch), ids_ref(c.rows * c.k);
  int32_t bad = -1, bad_ref = 0;
  w_d.download(w.data(), w_d.bytes());
  ids_d.download(ids.data(), ids_d.bytes());
  bad_d.download(&bad, 4);
  const Device cpu = Device::cpu();
  hash_router(TensorView(w_ref.data(), DType::f32, cpu, {c.rows, c.k}),
              TensorView(ids_ref.data(), DType::i32, cpu, {c.rows, c.k}),
              TensorView(tokens.data(), DType::i64, cpu, {c.rows}),
              TensorView(table.data(), DType::i32, cpu, {kVocab, c.k}),
              TensorView(&bad_ref, DType::i32, cpu, {1}));
  EXPECT_EQ(bad, bad_ref);
  if (c.rows > 1) EXPECT_GT(bad_ref, 0);
  int64_t mismatches = 0;
  for (int64_t t = 0; t < c.rows; ++t) {
    for (int64_t j = 0; j < c.k; ++j) {
      mismatches += ids[t * pitch + j] != ids_ref[t * c.k + j];
      mismatches += w[t * pitch + j] != w_ref[t * c.k + j];  // NaN (unwritten) never equals
    }
  }
  EXPECT_EQ(mismatches, 0);

  // No count tensor (the torch default): the same bytes out, nothing counted anywhere.
  w_d.fill_nan();
  ids_d.fill_nan();
  hash_router(strided(w_d.data(), DType::f32, {c.rows, c.k}, {pitch, 1}),
              strided(ids_d.data(), DType::i32, {c.rows, c.k}, {pitch, 1}),
              TensorView(tokens_d.data(), DType::i64, gpu, {c.rows}),
              strided(table_d.data(), DType::i32, {kVocab, c.k}, table_strides), TensorView{});
  std::vector<float> w_uncounted(w.size());
  std::vector<int32_t> ids_uncounted(ids.size());
  w_d.download(w_uncounted.data(), w_d.bytes());
  ids_d.download(ids_uncounted.data(), ids_d.bytes());
  EXPECT_EQ(std::memcmp(w_uncounted.data(), w.data(), w_d.bytes()), 0) << "uncounted weights";
  EXPECT_EQ(ids_uncounted, ids) << "uncounted ids";
}

std::vector<HashCase> hash_sweep() {
  std::vector<HashCase> cases;
  std::vector<int64_t> rows = testing::sweep_rows();
  if (!testing::quick_sweep()) rows.push_back(70000);
  for (int64_t r : rows)
    for (int64_t k : {1, 8, 40})
      for (bool strided : {false, true}) cases.push_back({r, k, strided});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, HashRouterCuda, ::testing::ValuesIn(hash_sweep()),
                         [](const ::testing::TestParamInfo<HashCase>& info) {
                           return "T" + std::to_string(info.param.rows) + "_k" +
                                  std::to_string(info.param.k) +
                                  (info.param.strided ? "_strided" : "");
                         });

}  // namespace
}  // namespace kiln
