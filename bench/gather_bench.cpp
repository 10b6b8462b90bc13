// Benchmark cases of the row gathers at a KV-compaction shape: K and V [65536, 8, 128] bf16,
// 32768 rows picked by a random int32 index (single: K alone; pair: K and V in one launch).
// Bytes: the gathered rows read and written, plus the index.
#include <algorithm>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "buffer.h"
#include "harness.h"
#include "kiln/ops/gather.h"

namespace kiln::bench {
namespace {

struct Shape {
  int64_t n, m, row;  // source rows, gathered rows, elements a row
  std::vector<int32_t> index;
};

struct Tensors {
  Buffer k, v, index, ok, ov, bad;
  Tensors(const Device& d, const Shape& s, bool pair)
      : k(d, s.n * s.row * 2),
        v(d, pair ? s.n * s.row * 2 : 0),
        index(d, s.m * 4),
        ok(d, s.m * s.row * 2),
        ov(d, pair ? s.m * s.row * 2 : 0),
        bad(d, 4) {
    std::vector<uint16_t> values(s.n * s.row);
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<uint16_t>(0x3c00 + i % 977);
    k.upload(values.data(), k.bytes());
    if (pair) v.upload(values.data(), v.bytes());
    index.upload(s.index.data(), index.bytes());
    const int32_t zero = 0;
    bad.upload(&zero, 4);
  }
};

void call(bool pair, Tensors& t, const Shape& s, const Device& d, Stream stream) {
  auto rows = [&](const Buffer& b, int64_t r) {
    return TensorView(b.data(), DType::bf16, d, {r, 8, s.row / 8});
  };
  const TensorView index(t.index.data(), DType::i32, d, {s.m});
  const TensorView bad(t.bad.data(), DType::i32, d, {1});
  if (pair) {
    gather_rows_pair(rows(t.ok, s.m), rows(t.ov, s.m), rows(t.k, s.n), rows(t.v, s.n), index, bad,
                     stream);
  } else {
    gather_rows(rows(t.ok, s.m), rows(t.k, s.n), index, bad, stream);
  }
}

std::string check(bool pair, const Shape& s, const Device& d) {
  Tensors dev(d, s, pair), ref(Device::cpu(), s, pair);
  dev.ok.fill_nan();
  call(pair, dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  call(pair, ref, s, Device::cpu(), nullptr);
  std::vector<uint8_t> got(dev.ok.bytes()), want(ref.ok.bytes());
  dev.ok.download(got.data(), got.size());
  ref.ok.download(want.data(), want.size());
  int32_t bad = -1;
  dev.bad.download(&bad, 4);
  if (bad != 0) return "bad_indices " + std::to_string(bad);
  return got == want ? "ok" : "rows differ";
}

}  // namespace

std::vector<Case> gather_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  auto s = std::make_shared<Shape>();
  s->n = d.is_cpu() ? 256 : options.quick ? 16384 : 65536;
  s->m = s->n / 2;
  s->row = 8 * 128;
  s->index.resize(s->m);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(s->n - 1));
  for (auto& i : s->index) i = pick(rng);
  for (bool pair : {false, true}) {
    Case c;
    c.op = pair ? "gather_rows_pair" : "gather_rows";
    c.shape = "bf16 " + std::to_string(s->m) + " of " + std::to_string(s->n) + "x8x128";
    c.direction = "fwd";
    c.bytes = (pair ? 2 : 1) * 2.0 * s->m * s->row * 2 + s->m * 4.0;
    c.prepare = rotating_sets([s, d, pair] { return std::make_unique<Tensors>(d, *s, pair); },
                              [s, d, pair](Tensors& t, Stream st) { call(pair, t, *s, d, st); });
    c.check = [s, d, pair] { return check(pair, *s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
