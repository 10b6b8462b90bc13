// Benchmark cases of sinkhorn_knopp at mHC's hot shape: one 4 x 4 matrix a token for 16384 tokens
// x 4 layers' worth (B = 65536), 20 iterations, f32. Bytes: logits (+ dout) read, out written.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/element.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/mhc.h"

namespace kiln::bench {
namespace {

constexpr int kN = 4, kIters = 20;
constexpr double kEps = 1e-8;

struct Shape {
  int64_t batch;
  std::vector<uint8_t> logits, dout;
};

struct Tensors {
  Buffer logits, dout, out;
  Tensors(const Device& d, const Shape& s)
      : logits(d, s.logits.size()), dout(d, s.dout.size()), out(d, s.logits.size()) {
    logits.upload(s.logits.data(), s.logits.size());
    dout.upload(s.dout.data(), s.dout.size());
  }
};

void call(bool backward, Tensors& t, const Shape& s, const Device& d, Stream stream) {
  auto view = [&](const Buffer& b) {
    return TensorView(b.data(), DType::f32, d, {s.batch, kN, kN});
  };
  if (backward) {
    sinkhorn_knopp_backward(view(t.out), view(t.dout), view(t.logits), kIters, kEps, stream);
  } else {
    sinkhorn_knopp(view(t.out), view(t.logits), kIters, kEps, stream);
  }
}

std::string check(bool backward, const Shape& s, const Device& d) {
  Tensors dev(d, s), ref(Device::cpu(), s);
  dev.out.fill_nan();
  call(backward, dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  call(backward, ref, s, Device::cpu(), nullptr);
  const std::string bad = compare(dev.out, ref.out, DType::f32, 1e-4, backward ? "dlogits" : "out");
  return bad.empty() ? "ok" : bad;
}

}  // namespace

std::vector<Case> mhc_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  auto s = std::make_shared<Shape>();
  s->batch = d.is_cpu() ? 64 : options.quick ? 16384 : 65536;
  const int64_t n = s->batch * kN * kN;
  HostRandom random(n);
  s->logits.resize(n * 4);
  s->dout.resize(n * 4);
  random.fill(s->logits.data(), DType::f32, n);
  random.fill(s->dout.data(), DType::f32, n);
  for (bool backward : {false, true}) {
    Case c;
    c.op = "sinkhorn_knopp";
    c.shape = "f32 " + std::to_string(s->batch) + "x4x4 it20";
    c.direction = backward ? "bwd" : "fwd";
    c.bytes = (backward ? 3.0 : 2.0) * n * 4;
    c.prepare =
        rotating_sets([s, d, backward] { return std::make_unique<Tensors>(d, *s); },
                      [s, d, backward](Tensors& t, Stream st) { call(backward, t, *s, d, st); });
    c.check = [s, d, backward] { return check(backward, *s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
