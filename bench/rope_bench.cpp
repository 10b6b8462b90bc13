// Benchmark cases of rope at Llama shapes: T = 16384 tokens (4 sequences of 4096), Hq = 32 and
// Hk = 32 (MHA) or 8 (GQA), D = R = 128, bf16, NeoX, in place on strided q and k views of a fused
// qkv buffer (v untouched), positions 0..4095 into a 4096-row f32 cos/sin cache. Bytes: q and k
// read and written, each token's cos/sin row (4 R) and its position (8).
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/rope.h"

namespace kiln::bench {
namespace {

constexpr int64_t kHeadsQ = 32, kDim = 128, kMaxPosition = 4096;

struct Shape {
  int64_t tokens, hk;
  std::vector<uint8_t> qkv;
  std::vector<float> cache;
  std::vector<int64_t> positions;
  int64_t width() const { return (kHeadsQ + 2 * hk) * kDim; }
};

struct Tensors {
  Buffer qkv, cache, positions, bad;
  Tensors(const Device& d, const Shape& s)
      : qkv(d, s.qkv.size()), cache(d, s.cache.size() * 4), positions(d, s.tokens * 8), bad(d, 4) {
    qkv.upload(s.qkv.data(), s.qkv.size());
    cache.upload(s.cache.data(), cache.bytes());
    positions.upload(s.positions.data(), positions.bytes());
    const int32_t zero = 0;
    bad.upload(&zero, 4);
  }
};

void call(Tensors& t, const Shape& s, const Device& d, Stream stream) {
  auto heads = [&](int64_t first, int64_t n) {
    const int64_t sizes[3] = {s.tokens, n, kDim}, strides[3] = {s.width(), kDim, 1};
    return TensorView(static_cast<char*>(t.qkv.data()) + first * kDim * 2, DType::bf16, d, sizes,
                      strides);
  };
  const TensorView q = heads(0, kHeadsQ), k = heads(kHeadsQ, s.hk);
  rope(q, k, q, k, TensorView(t.cache.data(), DType::f32, d, {kMaxPosition, kDim}),
       TensorView(t.positions.data(), DType::i64, d, {s.tokens}), RopeLayout::neox, kDim,
       TensorView(t.bad.data(), DType::i32, d, {1}), stream);
}

std::string check(const Shape& s, const Device& d) {
  Tensors dev(d, s), ref(Device::cpu(), s);
  call(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  call(ref, s, Device::cpu(), nullptr);
  int32_t bad = -1;
  dev.bad.download(&bad, 4);
  if (bad != 0) return "bad_positions " + std::to_string(bad);
  const std::string differ = compare(dev.qkv, ref.qkv, DType::bf16, 1e-2, "qkv");
  return differ.empty() ? "ok" : differ;
}

}  // namespace

std::vector<Case> rope_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  for (int64_t hk : {int64_t{32}, int64_t{8}}) {
    auto s = std::make_shared<Shape>();
    s->tokens = d.is_cpu() ? 64 : options.quick ? 4096 : 4 * kMaxPosition;
    s->hk = hk;
    const int64_t n = s->tokens * s->width();
    s->qkv.resize(n * 2);
    HostRandom(n).fill(s->qkv.data(), DType::bf16, n);
    s->cache.resize(kMaxPosition * kDim);
    rope_fill_cache(s->cache.data(), kMaxPosition, kDim);
    s->positions.resize(s->tokens);
    for (int64_t t = 0; t < s->tokens; ++t) s->positions[t] = t % kMaxPosition;
    Case c;
    c.op = "rope";
    c.shape = "bf16 " + std::to_string(s->tokens) + "x(32+" + std::to_string(hk) + ")x128";
    c.direction = "fwd";
    c.bytes = 2.0 * s->tokens * (kHeadsQ + hk) * kDim * 2 + s->tokens * (kDim * 4.0 + 8.0);
    c.flops = 3.0 * s->tokens * (kHeadsQ + hk) * kDim;  // 6 a pair, D / 2 pairs a head
    c.prepare = rotating_sets([s, d] { return std::make_unique<Tensors>(d, *s); },
                              [s, d](Tensors& t, Stream st) { call(t, *s, d, st); });
    c.check = [s, d] { return check(*s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
