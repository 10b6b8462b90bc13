// Benchmark case of tau_tail: T = 16384 tokens, H = 32 heads, D = 128, bf16 qkv [T, 3 H D] scaled
// in place, f32 tok_qv_lin and tau table, int64 positions. Bytes: q and v read and written, the
// token gains and positions read (the table rows stay in L2; k is not touched).
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/tau_tail.h"

namespace kiln::bench {
namespace {

constexpr int64_t kHeads = 32, kDim = 128, kPositions = 8192;

struct TauShape {
  int64_t tokens;
  std::vector<uint8_t> qkv;
  std::vector<float> tok, table;
  std::vector<int64_t> positions;
};

struct TauTensors {
  Buffer qkv, tok, table, positions, bad;
  TauTensors(const Device& d, const TauShape& s)
      : qkv(d, s.qkv.size()),
        tok(d, s.tok.size() * 4),
        table(d, s.table.size() * 4),
        positions(d, s.positions.size() * 8),
        bad(d, 4) {
    qkv.upload(s.qkv.data(), s.qkv.size());
    tok.upload(s.tok.data(), tok.bytes());
    table.upload(s.table.data(), table.bytes());
    positions.upload(s.positions.data(), positions.bytes());
    const int32_t zero = 0;
    bad.upload(&zero, 4);
  }
};

void tau_call(TauTensors& t, const TauShape& s, const Device& d, Stream stream) {
  tau_tail(TensorView(t.qkv.data(), DType::bf16, d, {s.tokens, 3 * kHeads * kDim}),
           TensorView(t.tok.data(), DType::f32, d, {s.tokens, 2 * kHeads}),
           TensorView(t.table.data(), DType::f32, d, {kPositions, kHeads}),
           TensorView(t.positions.data(), DType::i64, d, {s.tokens}), kHeads,
           TensorView(t.bad.data(), DType::i32, d, {1}), stream);
}

std::string tau_check(const TauShape& s, const Device& d) {
  TauTensors dev(d, s), ref(Device::cpu(), s);
  tau_call(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  tau_call(ref, s, Device::cpu(), nullptr);
  const std::string e = compare(dev.qkv, ref.qkv, DType::bf16, 1e-2, "qkv");
  return e.empty() ? "ok" : e;
}

}  // namespace

std::vector<Case> tau_cases(const Options& options) {
  const Device d = options.device;
  auto s = std::make_shared<TauShape>();
  s->tokens = d.is_cpu() ? 64 : options.quick ? 2048 : 16384;
  const int64_t row = 3 * kHeads * kDim;
  s->qkv.resize(s->tokens * row * 2);
  HostRandom random(7);
  random.fill(s->qkv.data(), DType::bf16, s->tokens * row);
  s->tok.resize(s->tokens * 2 * kHeads);
  random.fill(s->tok.data(), DType::f32, static_cast<int64_t>(s->tok.size()));
  s->table.resize(kPositions * kHeads);
  random.fill(s->table.data(), DType::f32, static_cast<int64_t>(s->table.size()), 1.0, 0.1);
  s->positions.resize(s->tokens);
  for (int64_t t = 0; t < s->tokens; ++t) s->positions[t] = t % kPositions;
  Case c;
  c.op = "tau_tail";
  c.shape = "bf16 " + std::to_string(s->tokens) + "x3x32x128";
  c.direction = "fwd";
  c.bytes = 2.0 * 2 * s->tokens * kHeads * kDim * 2 + s->tokens * (2 * kHeads * 4.0 + 8);
  c.prepare = rotating_sets([s, d] { return std::make_unique<TauTensors>(d, *s); },
                            [s, d](TauTensors& t, Stream st) { tau_call(t, *s, d, st); });
  c.check = [s, d] { return tau_check(*s, d); };
  c.variant = [] { return last_receipt().variant; };
  return {c};
}

}  // namespace kiln::bench
