// Benchmark cases of moe_align_block_size at DeepSeek-V3's routing: k = 8 of 256 experts, block
// 64, T = 8192 (prefill) and T = 16 (decode). Checked against the reference (every output
// exactly) before timing. Bytes: the ids read, sorted_token_ids and expert_ids written.
#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "buffer.h"
#include "harness.h"
#include "kiln/ops/moe_align.h"

namespace kiln::bench {
namespace {

constexpr int64_t kK = 8, kExperts = 256, kBlock = 64;

struct AlignShape {
  int64_t tokens, capacity;
  std::vector<int32_t> ids;
};

struct AlignTensors {
  Buffer ids, sorted, blocks, post, bad;
  AlignTensors(const Device& d, const AlignShape& s)
      : ids(d, s.ids.size() * 4),
        sorted(d, s.capacity * 4),
        blocks(d, s.capacity / kBlock * 4),
        post(d, 4),
        bad(d, 4) {
    ids.upload(s.ids.data(), ids.bytes());
    const int32_t zero = 0;
    bad.upload(&zero, 4);
  }
};

void align_call(AlignTensors& t, const AlignShape& s, const Device& d, Stream stream) {
  auto vec = [&](Buffer& b, int64_t n) { return TensorView(b.data(), DType::i32, d, {n}); };
  moe_align_block_size(vec(t.sorted, s.capacity), vec(t.blocks, s.capacity / kBlock),
                       vec(t.post, 1), vec(t.bad, 1),
                       TensorView(t.ids.data(), DType::i32, d, {s.tokens, kK}), kExperts, kBlock,
                       TensorView(), kExperts, stream);
}

std::string align_check(const AlignShape& s, const Device& d) {
  AlignTensors dev(d, s), ref(Device::cpu(), s);
  dev.sorted.fill_nan();
  align_call(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  align_call(ref, s, Device::cpu(), nullptr);
  std::string e = compare_exact(dev.sorted, ref.sorted, "sorted_token_ids");
  if (e.empty()) e = compare_exact(dev.blocks, ref.blocks, "expert_ids");
  if (e.empty()) e = compare_exact(dev.post, ref.post, "num_tokens_post_pad");
  return e.empty() ? "ok" : e;
}

}  // namespace

std::vector<Case> moe_align_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  for (int64_t tokens : {int64_t{8192}, int64_t{16}}) {
    auto s = std::make_shared<AlignShape>();
    s->tokens = d.is_cpu() ? std::min<int64_t>(tokens, 256) : tokens;
    s->capacity = moe_align_capacity(s->tokens, kK, kExperts, kBlock);
    std::mt19937 rng(static_cast<uint32_t>(tokens));
    std::uniform_int_distribution<int32_t> pick(0, kExperts - 1);
    s->ids.resize(s->tokens * kK);
    for (auto& id : s->ids) id = pick(rng);
    Case c;
    c.op = "moe_align_block_size";
    c.shape = std::to_string(s->tokens) + "x8 of 256, block 64";
    c.direction = "fwd";
    c.bytes = s->ids.size() * 4.0 + s->capacity * 4.0 + s->capacity / kBlock * 4.0;
    c.prepare = rotating_sets([s, d] { return std::make_unique<AlignTensors>(d, *s); },
                              [s, d](AlignTensors& t, Stream st) { align_call(t, *s, d, st); });
    c.check = [s, d] { return align_check(*s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
