// Benchmark cases of attention: bf16, D = 128, B = 2, T = 8192, H = 16 (issue 4's anchor shape),
// causal and not, forward and backward. Compute-bound: FLOPs count 4 D per visible (query, key)
// pair (2.5x that backward), compared with the dense GEMM rate measured in the same run. The
// check runs the same kernels at B = 1, T = 384, H = 2 (the float64 reference is quadratic) and
// compares with the reference. On the CPU the timed shape is the check's.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/core/receipt.h"
#include "kiln/ops/attention.h"

namespace kiln::bench {
namespace {

constexpr int64_t kD = 128;

struct AttentionShape {
  int64_t batch, tokens, heads;
  bool causal;
  int64_t total() const { return batch * tokens; }
  double pairs() const {  // visible (query, key) pairs
    const double t = static_cast<double>(tokens);
    return static_cast<double>(batch * heads) * (causal ? t * (t + 1) / 2 : t * t);
  }
};

struct AttentionTensors {
  Buffer q, k, v, out, lse, dout, dq, dk, dv, cu;
  AttentionTensors(const Device& d, const AttentionShape& s, uint64_t seed)
      : q(d, s.total() * s.heads * kD * 2),
        k(d, q.bytes()),
        v(d, q.bytes()),
        out(d, q.bytes()),
        lse(d, s.total() * s.heads * 4),
        dout(d, q.bytes()),
        dq(d, q.bytes()),
        dk(d, q.bytes()),
        dv(d, q.bytes()),
        cu(d, (s.batch + 1) * 4) {
    std::vector<uint16_t> host(s.total() * s.heads * kD);
    HostRandom random(seed);
    for (Buffer* b : {&q, &k, &v, &dout}) {
      random.fill(host.data(), DType::bf16, static_cast<int64_t>(host.size()));
      b->upload(host.data(), b->bytes());
    }
    std::vector<int32_t> offsets;
    for (int64_t b = 0; b <= s.batch; ++b) offsets.push_back(static_cast<int32_t>(b * s.tokens));
    cu.upload(offsets.data(), cu.bytes());
  }
  TensorView heads(const Buffer& b, const Device& d, const AttentionShape& s) const {
    return TensorView(b.data(), DType::bf16, d, {s.total(), s.heads, kD});
  }
  AttentionMasks masks(const Device& d, const AttentionShape& s) const {
    AttentionMasks m;
    m.cu_seqlens_q = m.cu_seqlens_k = TensorView(cu.data(), DType::i32, d, {s.batch + 1});
    m.causal = s.causal;
    return m;
  }
};

AttentionOptions options_for() {
  AttentionOptions o;
  o.softmax_scale = 1.0 / std::sqrt(static_cast<double>(kD));
  return o;
}

void forward(AttentionTensors& t, const AttentionShape& s, const Device& d, Stream stream) {
  attention_varlen(t.heads(t.out, d, s),
                   TensorView(t.lse.data(), DType::f32, d, {s.heads, s.total()}),
                   t.heads(t.q, d, s), t.heads(t.k, d, s), t.heads(t.v, d, s), t.masks(d, s),
                   options_for(), stream);
}

void backward(AttentionTensors& t, const AttentionShape& s, const Device& d, Stream stream) {
  attention_varlen_backward(t.heads(t.dq, d, s), t.heads(t.dk, d, s), t.heads(t.dv, d, s),
                            t.heads(t.dout, d, s), t.heads(t.q, d, s), t.heads(t.k, d, s),
                            t.heads(t.v, d, s), t.heads(t.out, d, s),
                            TensorView(t.lse.data(), DType::f32, d, {s.heads, s.total()}),
                            t.masks(d, s), options_for(), stream);
}

std::string attention_check(AttentionShape s, bool backward_pass, const Device& d) {
  s.batch = 1;
  s.tokens = 384;
  s.heads = 2;
  AttentionTensors dev(d, s, 7), ref(Device::cpu(), s, 7);
  for (Buffer* b : {&dev.out, &dev.dq, &dev.dk, &dev.dv}) b->fill_nan();
  forward(dev, s, d, nullptr);
  if (backward_pass) backward(dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  forward(ref, s, Device::cpu(), nullptr);
  std::string e = compare(dev.out, ref.out, DType::bf16, 1e-2, "out");
  if (backward_pass && e.empty()) {
    backward(ref, s, Device::cpu(), nullptr);
    e = compare(dev.dq, ref.dq, DType::bf16, 2e-2, "dq");
    if (e.empty()) e = compare(dev.dk, ref.dk, DType::bf16, 2e-2, "dk");
    if (e.empty()) e = compare(dev.dv, ref.dv, DType::bf16, 2e-2, "dv");
  }
  return e.empty() ? "ok (at T = 384)" : e;
}

}  // namespace

std::vector<Case> attention_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  for (const bool causal : {false, true}) {
    for (const bool bwd : {false, true}) {
      auto s = std::make_shared<AttentionShape>(d.is_cpu() ? AttentionShape{1, 384, 2, causal}
                                                           : AttentionShape{2, 8192, 16, causal});
      Case c;
      c.op = "attention_varlen";
      c.shape = "bf16 d128 " + std::to_string(s->batch) + "x" + std::to_string(s->tokens) + " h" +
                std::to_string(s->heads) + (causal ? " causal" : "");
      c.direction = bwd ? "bwd" : "fwd";
      const double tensor = static_cast<double>(s->total() * s->heads * kD * 2);
      c.bytes = bwd ? 8 * tensor : 4 * tensor;  // q k v (out dout) read; out (dq dk dv) written
      c.flops = (bwd ? 2.5 : 1.0) * 4.0 * kD * s->pairs();
      c.prepare = rotating_sets(
          [s, d] {
            auto t = std::make_unique<AttentionTensors>(d, *s, 1);
            forward(*t, *s, d, nullptr);  // out and lse for the backward
            return t;
          },
          [s, d, bwd](AttentionTensors& t, Stream st) {
            if (bwd) {
              backward(t, *s, d, st);
            } else {
              forward(t, *s, d, st);
            }
          });
      c.check = [s, d, bwd] { return attention_check(*s, bwd, d); };
      c.variant = [] { return last_receipt().variant; };
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

}  // namespace kiln::bench
