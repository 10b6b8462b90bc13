// Benchmark cases of kv_cache_write: T = 32768 tokens (a prefill chunk; at 4096 tokens, 16 MB,
// launch and tail costs dominate), Hkv = 8, D = 128, bf16 into a bf16 cache
// and into an e4m3 cache with per-head scales, slots a random half of the cache. Bytes: k and v
// read, their cache rows written, the slots read.
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/kv_cache.h"

namespace kiln::bench {
namespace {

constexpr int64_t kHeads = 8, kDim = 128, kBlockSize = 16;

struct KvShape {
  int64_t tokens, blocks;
  DType cache;
  std::vector<uint8_t> k;
  std::vector<int64_t> slots;
  std::vector<float> scale;
};

struct KvTensors {
  Buffer k, kc, vc, slots, scale, bad;
  KvTensors(const Device& d, const KvShape& s)
      : k(d, s.k.size()),
        kc(d, s.blocks * kBlockSize * kHeads * kDim * dtype_size(s.cache)),
        vc(d, kc.bytes()),
        slots(d, s.slots.size() * 8),
        scale(d, s.scale.size() * 4),
        bad(d, 4) {
    k.upload(s.k.data(), s.k.size());
    slots.upload(s.slots.data(), slots.bytes());
    scale.upload(s.scale.data(), scale.bytes());
    const int32_t zero = 0;
    bad.upload(&zero, 4);
  }
};

void kv_call(KvTensors& t, const KvShape& s, const Device& d, Stream stream) {
  const TensorView k(t.k.data(), DType::bf16, d, {s.tokens, kHeads, kDim});
  const TensorView kc(t.kc.data(), s.cache, d, {s.blocks, kBlockSize, kHeads, kDim});
  const TensorView vc(t.vc.data(), s.cache, d, {s.blocks, kBlockSize, kHeads, kDim});
  const TensorView scale =
      s.cache == DType::f8e4m3 ? TensorView(t.scale.data(), DType::f32, d, {kHeads}) : TensorView();
  kv_cache_write(kc, vc, k, k, TensorView(t.slots.data(), DType::i64, d, {s.tokens}), scale,
                 TensorView(t.bad.data(), DType::i32, d, {1}), stream);
}

std::string kv_check(const KvShape& s, const Device& d) {
  KvTensors dev(d, s), ref(Device::cpu(), s);
  kv_call(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  kv_call(ref, s, Device::cpu(), nullptr);
  std::vector<uint8_t> got(dev.kc.bytes()), want(ref.kc.bytes());
  dev.kc.download(got.data(), got.size());
  ref.kc.download(want.data(), want.size());
  // Only the written slots are defined (the caches start unset).
  const size_t row = kHeads * kDim * dtype_size(s.cache);
  size_t differ = 0;
  for (int64_t slot : s.slots) {
    for (size_t b = 0; b < row; ++b) differ += got[slot * row + b] != want[slot * row + b];
  }
  // e4m3: fp32 division on the GPU vs the reference may round a tie differently, rarely.
  const size_t allowed = s.cache == DType::f8e4m3 ? s.slots.size() * row / 1000 : 0;
  return differ <= allowed ? "ok" : std::to_string(differ) + " cache bytes differ";
}

}  // namespace

std::vector<Case> cache_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  for (DType cache : {DType::bf16, DType::f8e4m3}) {
    auto s = std::make_shared<KvShape>();
    s->tokens = d.is_cpu() ? 64 : options.quick ? 4096 : 32768;
    s->blocks = 2 * s->tokens / kBlockSize;
    s->cache = cache;
    s->k.resize(s->tokens * kHeads * kDim * 2);
    HostRandom random(s->tokens);
    random.fill(s->k.data(), DType::bf16, s->tokens * kHeads * kDim);
    std::vector<int64_t> perm(s->blocks * kBlockSize);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(3));
    s->slots.assign(perm.begin(), perm.begin() + s->tokens);
    s->scale.assign(kHeads, 0.01f);
    Case c;
    c.op = "kv_cache_write";
    c.shape = "bf16 " + std::to_string(s->tokens) + "x8x128 -> " + std::string(dtype_name(cache));
    c.direction = "fwd";
    c.bytes = 2.0 * s->tokens * kHeads * kDim * (2 + dtype_size(cache)) + s->tokens * 8.0;
    c.prepare = rotating_sets([s, d] { return std::make_unique<KvTensors>(d, *s); },
                              [s, d](KvTensors& t, Stream st) { kv_call(t, *s, d, st); });
    c.check = [s, d] { return kv_check(*s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
