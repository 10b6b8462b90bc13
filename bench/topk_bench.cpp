// Benchmark cases of topk: DeepSeek-V3's router shape, E = 256, k = 8, f32 scores, at T = 16384
// (prefill) and T = 64 (decode: launch-bound). Checked against the reference (indices exactly)
// before timing. Bytes: scores read, values and indices written.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/topk.h"

namespace kiln::bench {
namespace {

constexpr int64_t kExperts = 256, kK = 8;

struct TopkShape {
  int64_t rows;
  std::vector<float> scores;
};

struct TopkTensors {
  Buffer scores, values, indices;
  TopkTensors(const Device& d, const TopkShape& s)
      : scores(d, s.scores.size() * 4), values(d, s.rows * kK * 4), indices(d, s.rows * kK * 4) {
    scores.upload(s.scores.data(), scores.bytes());
  }
};

void topk_call(TopkTensors& t, const TopkShape& s, const Device& d, Stream stream) {
  topk(TensorView(t.values.data(), DType::f32, d, {s.rows, kK}),
       TensorView(t.indices.data(), DType::i32, d, {s.rows, kK}),
       TensorView(t.scores.data(), DType::f32, d, {s.rows, kExperts}), kK, true, stream);
}

std::string topk_check(const TopkShape& s, const Device& d) {
  TopkTensors dev(d, s), ref(Device::cpu(), s);
  dev.indices.fill_nan();
  topk_call(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  topk_call(ref, s, Device::cpu(), nullptr);
  std::string e = compare_exact(dev.indices, ref.indices, "indices");
  if (e.empty()) e = compare(dev.values, ref.values, DType::f32, 1e-5, "values");
  return e.empty() ? "ok" : e;
}

}  // namespace

std::vector<Case> topk_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  for (int64_t rows : {int64_t{16384}, int64_t{64}}) {
    auto s = std::make_shared<TopkShape>();
    s->rows = d.is_cpu() ? std::min<int64_t>(rows, 64) : rows;
    s->scores.resize(s->rows * kExperts);
    HostRandom random(rows);
    random.fill(s->scores.data(), DType::f32, static_cast<int64_t>(s->scores.size()));
    Case c;
    c.op = "topk";
    c.shape = "f32 " + std::to_string(s->rows) + "x256 k8 softmax";
    c.direction = "fwd";
    c.bytes = s->rows * (kExperts * 4.0 + kK * 8.0);
    c.prepare = rotating_sets([s, d] { return std::make_unique<TopkTensors>(d, *s); },
                              [s, d](TopkTensors& t, Stream st) { topk_call(t, *s, d, st); });
    c.check = [s, d] { return topk_check(*s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
