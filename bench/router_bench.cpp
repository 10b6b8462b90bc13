// Benchmark cases of the routers at DeepSeek-V3's shape: f32 logits [T, 256], k = 8, the
// deepseek_v3 kind (8 groups, 4 kept, bias, scaling 2.5) and the softmax kind, T = 16384 and 64.
// Checked against the reference (ids exactly, on well-separated logits) before timing. Bytes:
// logits (and bias) read, weights and ids written. Also the hash router (bytes: token ids and the
// table rows read, weights and ids written).
#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "buffer.h"
#include "harness.h"
#include "kiln/ops/router.h"

namespace kiln::bench {
namespace {

constexpr int64_t kExperts = 256, kK = 8;

struct RouterShape {
  int64_t rows;
  RouterKind kind;
  std::vector<float> logits, bias;
};

struct RouterTensors {
  Buffer logits, bias, weights, ids;
  RouterTensors(const Device& d, const RouterShape& s)
      : logits(d, s.logits.size() * 4),
        bias(d, s.bias.size() * 4),
        weights(d, s.rows * kK * 4),
        ids(d, s.rows * kK * 4) {
    logits.upload(s.logits.data(), logits.bytes());
    bias.upload(s.bias.data(), bias.bytes());
  }
};

void router_call(RouterTensors& t, const RouterShape& s, const Device& d, Stream stream) {
  RouterConfig c;
  c.kind = s.kind;
  c.k = kK;
  if (s.kind == RouterKind::deepseek_v3) {
    c.bias = TensorView(t.bias.data(), DType::f32, d, {kExperts});
    c.n_group = 8;
    c.topk_group = 4;
    c.routed_scaling_factor = 2.5;
  } else {
    c.renormalize = true;
  }
  router(TensorView(t.weights.data(), DType::f32, d, {s.rows, kK}),
         TensorView(t.ids.data(), DType::i32, d, {s.rows, kK}),
         TensorView(t.logits.data(), DType::f32, d, {s.rows, kExperts}), c, stream);
}

std::string router_check(const RouterShape& s, const Device& d) {
  RouterTensors dev(d, s), ref(Device::cpu(), s);
  dev.ids.fill_nan();
  router_call(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  router_call(ref, s, Device::cpu(), nullptr);
  std::string e = compare_exact(dev.ids, ref.ids, "ids");
  if (e.empty()) e = compare(dev.weights, ref.weights, DType::f32, 1e-5, "weights");
  return e.empty() ? "ok" : e;
}

constexpr int64_t kHidden = 7168;

struct DenseShape {
  int64_t rows;
  std::vector<uint16_t> x, gate;  // bf16 bits
  std::vector<float> bias;
};

struct DenseTensors {
  Buffer x, gate, bias, weights, ids, workspace;
  DenseTensors(const Device& d, const DenseShape& s)
      : x(d, s.x.size() * 2),
        gate(d, s.gate.size() * 2),
        bias(d, kExperts * 4),
        weights(d, s.rows * kK * 4),
        ids(d, s.rows * kK * 4),
        workspace(d,
                  std::max<size_t>(16, dense_router_workspace_size(s.rows, kExperts, kHidden, d))) {
    x.upload(s.x.data(), x.bytes());
    gate.upload(s.gate.data(), gate.bytes());
    bias.upload(s.bias.data(), bias.bytes());
  }
};

void dense_call(DenseTensors& t, const DenseShape& s, const Device& d, Stream stream) {
  RouterConfig c;
  c.kind = RouterKind::deepseek_v3;
  c.k = kK;
  c.bias = TensorView(t.bias.data(), DType::f32, d, {kExperts});
  c.n_group = 8;
  c.topk_group = 4;
  c.routed_scaling_factor = 2.5;
  dense_router(TensorView(t.weights.data(), DType::f32, d, {s.rows, kK}),
               TensorView(t.ids.data(), DType::i32, d, {s.rows, kK}), TensorView(),
               TensorView(t.x.data(), DType::bf16, d, {s.rows, kHidden}),
               TensorView(t.gate.data(), DType::bf16, d, {kExperts, kHidden}), c,
               Workspace{t.workspace.data(), t.workspace.bytes()}, stream);
}

std::string dense_check(const DenseShape& s, const Device& d) {
  DenseTensors dev(d, s), ref(Device::cpu(), s);
  dev.ids.fill_nan();
  dense_call(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  dense_call(ref, s, Device::cpu(), nullptr);
  std::string e = compare_exact(dev.ids, ref.ids, "ids");
  if (e.empty()) e = compare(dev.weights, ref.weights, DType::f32, 1e-5, "weights");
  return e.empty() ? "ok" : e;
}

constexpr int64_t kVocab = 129280;

struct HashShape {
  int64_t rows;
  std::vector<int64_t> tokens;
  std::vector<int32_t> table;
};

struct HashTensors {
  Buffer tokens, table, weights, ids, bad;
  HashTensors(const Device& d, const HashShape& s)
      : tokens(d, s.rows * 8),
        table(d, s.table.size() * 4),
        weights(d, s.rows * kK * 4),
        ids(d, s.rows * kK * 4),
        bad(d, 4) {
    tokens.upload(s.tokens.data(), tokens.bytes());
    table.upload(s.table.data(), table.bytes());
    const int32_t zero = 0;
    bad.upload(&zero, 4);
  }
};

void hash_call(HashTensors& t, const HashShape& s, const Device& d, Stream stream) {
  hash_router(TensorView(t.weights.data(), DType::f32, d, {s.rows, kK}),
              TensorView(t.ids.data(), DType::i32, d, {s.rows, kK}),
              TensorView(t.tokens.data(), DType::i64, d, {s.rows}),
              TensorView(t.table.data(), DType::i32, d, {kVocab, kK}),
              TensorView(t.bad.data(), DType::i32, d, {1}), stream);
}

std::string hash_check(const HashShape& s, const Device& d) {
  HashTensors dev(d, s), ref(Device::cpu(), s);
  dev.ids.fill_nan();
  dev.weights.fill_nan();
  hash_call(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  hash_call(ref, s, Device::cpu(), nullptr);
  std::string e = compare_exact(dev.ids, ref.ids, "ids");
  if (e.empty()) e = compare_exact(dev.weights, ref.weights, "weights");
  if (e.empty()) e = compare_exact(dev.bad, ref.bad, "bad token count");
  return e.empty() ? "ok" : e;
}

}  // namespace

std::vector<Case> router_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  for (RouterKind kind : {RouterKind::deepseek_v3, RouterKind::softmax}) {
    for (int64_t rows : {int64_t{16384}, int64_t{64}}) {
      auto s = std::make_shared<RouterShape>();
      s->rows = d.is_cpu() ? std::min<int64_t>(rows, 64) : rows;
      s->kind = kind;
      // Each row a permutation of levels 1/64 apart: no near ties, so ids are exact.
      std::mt19937 rng(static_cast<uint32_t>(rows));
      std::vector<int> order(kExperts);
      for (int64_t r = 0; r < s->rows; ++r) {
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        for (int o : order) s->logits.push_back(o / 64.f - 2.f);
      }
      for (int64_t e = 0; e < kExperts; ++e) s->bias.push_back(2.f * static_cast<float>(rng() % 3));
      Case c;
      c.op = "router";
      c.shape = std::string(kind == RouterKind::deepseek_v3 ? "deepseek_v3" : "softmax") + " f32 " +
                std::to_string(s->rows) + "x256 k8";
      c.direction = "fwd";
      c.bytes = s->rows * (kExperts * 4.0 + kK * 8.0) + kExperts * 4.0;
      c.prepare = rotating_sets([s, d] { return std::make_unique<RouterTensors>(d, *s); },
                                [s, d](RouterTensors& t, Stream st) { router_call(t, *s, d, st); });
      c.check = [s, d] { return router_check(*s, d); };
      c.variant = [] { return last_receipt().variant; };
      cases.push_back(std::move(c));
    }
  }
  // The dense router from bf16 hidden states [T, 7168] and gate [256, 7168] (deepseek_v3): T = 1
  // and 16 take the fused kernel, 16384 cuBLAS + the router kernel. The first 256 columns of x
  // are separated levels and the gate is the identity there (zero past it): exact logits, so the
  // ids must match the reference.
  for (int64_t rows : {int64_t{1}, int64_t{16}, int64_t{16384}}) {
    auto s = std::make_shared<DenseShape>();
    s->rows = d.is_cpu() ? std::min<int64_t>(rows, 2) : rows;
    std::mt19937 rng(static_cast<uint32_t>(rows + 1));
    std::normal_distribution<float> normal;
    std::vector<int> order(kExperts);
    auto bf16_bits = [](float f) {  // exact for these values: levels and rounded normals
      uint32_t u;
      std::memcpy(&u, &f, 4);
      return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    };
    for (int64_t r = 0; r < s->rows; ++r) {
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      for (int64_t h = 0; h < kHidden; ++h) {
        s->x.push_back(bf16_bits(h < kExperts ? order[h] / 64.f - 2.f : normal(rng)));
      }
    }
    for (int64_t e = 0; e < kExperts; ++e)
      for (int64_t h = 0; h < kHidden; ++h) s->gate.push_back(bf16_bits(h == e ? 1.f : 0.f));
    for (int64_t e = 0; e < kExperts; ++e) s->bias.push_back(2.f * static_cast<float>(rng() % 3));
    Case c;
    c.op = "dense_router";
    c.shape = "deepseek_v3 bf16 x " + std::to_string(s->rows) + "x7168 gate 256x7168 k8";
    c.direction = "fwd";
    c.bytes = (s->rows + kExperts) * kHidden * 2.0 + s->rows * kK * 8.0;
    c.prepare = rotating_sets([s, d] { return std::make_unique<DenseTensors>(d, *s); },
                              [s, d](DenseTensors& t, Stream st) { dense_call(t, *s, d, st); });
    c.check = [s, d] { return dense_check(*s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  // The hash router at DeepSeek-V3's vocabulary (129280) and k = 8: launch-sized work; every
  // 16th token id past the table (counted).
  for (int64_t rows : {int64_t{16384}, int64_t{64}}) {
    auto s = std::make_shared<HashShape>();
    s->rows = d.is_cpu() ? std::min<int64_t>(rows, 64) : rows;
    std::mt19937_64 rng(static_cast<uint64_t>(rows));
    s->table.resize(kVocab * kK);
    for (auto& v : s->table) v = static_cast<int32_t>(rng() % kExperts);
    for (int64_t t = 0; t < s->rows; ++t) {
      s->tokens.push_back(t % 16 == 15 ? kVocab : static_cast<int64_t>(rng() % kVocab));
    }
    Case c;
    c.op = "hash_router";
    c.shape = "vocab 129280 T " + std::to_string(s->rows) + " k8";
    c.direction = "fwd";
    c.bytes = s->rows * (8.0 + kK * 4.0 + kK * 8.0);
    c.prepare = rotating_sets([s, d] { return std::make_unique<HashTensors>(d, *s); },
                              [s, d](HashTensors& t, Stream st) { hash_call(t, *s, d, st); });
    c.check = [s, d] { return hash_check(*s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
