// Benchmark cases of moe_sum at DeepSeek-V3's combine: T = 4096 tokens, k = 8, N = 7168, bf16
// values with f32 routing weights. Bytes: forward x read + out written (+ weights); backward dout
// and x read (x for dweights) + dx written (+ weights, dweights).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/element.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/moe_sum.h"

namespace kiln::bench {
namespace {

struct Shape {
  int64_t tokens, k, cols;
  std::vector<uint8_t> x, w, dout;
};

struct Tensors {
  Buffer x, w, dout, out, dx, dw;
  Tensors(const Device& d, const Shape& s, bool backward)
      : x(d, s.x.size()),
        w(d, s.w.size()),
        dout(d, backward ? s.dout.size() : 0),
        out(d, backward ? 0 : s.dout.size()),
        dx(d, backward ? s.x.size() : 0),
        dw(d, backward ? s.w.size() : 0) {
    x.upload(s.x.data(), s.x.size());
    w.upload(s.w.data(), s.w.size());
    if (backward) dout.upload(s.dout.data(), s.dout.size());
  }
};

void call(bool backward, Tensors& t, const Shape& s, const Device& d, Stream stream) {
  const TensorView x(t.x.data(), DType::bf16, d, {s.tokens, s.k, s.cols});
  const TensorView w(t.w.data(), DType::f32, d, {s.tokens, s.k});
  if (backward) {
    moe_sum_backward(TensorView(t.dx.data(), DType::bf16, d, {s.tokens, s.k, s.cols}),
                     TensorView(t.dw.data(), DType::f32, d, {s.tokens, s.k}),
                     TensorView(t.dout.data(), DType::bf16, d, {s.tokens, s.cols}), x, w, stream);
  } else {
    moe_sum(TensorView(t.out.data(), DType::bf16, d, {s.tokens, s.cols}), x, w, stream);
  }
}

std::string check(bool backward, const Shape& s, const Device& d) {
  Tensors dev(d, s, backward), ref(Device::cpu(), s, backward);
  for (Buffer* b : {&dev.out, &dev.dx, &dev.dw}) {
    if (b->bytes()) b->fill_nan();
  }
  call(backward, dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  call(backward, ref, s, Device::cpu(), nullptr);
  std::string bad = backward ? compare(dev.dx, ref.dx, DType::bf16, 1e-2, "dx")
                             : compare(dev.out, ref.out, DType::bf16, 1e-2, "out");
  if (bad.empty() && backward) bad = compare(dev.dw, ref.dw, DType::f32, 1e-4, "dweights");
  return bad.empty() ? "ok" : bad;
}

}  // namespace

std::vector<Case> moe_sum_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  auto s = std::make_shared<Shape>();
  s->tokens = d.is_cpu() ? 16 : options.quick ? 1024 : 4096;
  s->k = 8;
  s->cols = 7168;
  const int64_t nx = s->tokens * s->k * s->cols, nw = s->tokens * s->k, nd = s->tokens * s->cols;
  HostRandom random(nx);
  s->x.resize(nx * 2);
  s->w.resize(nw * 4);
  s->dout.resize(nd * 2);
  random.fill(s->x.data(), DType::bf16, nx);
  random.fill(s->w.data(), DType::f32, nw, 0.125, 0.05);
  random.fill(s->dout.data(), DType::bf16, nd);
  for (bool backward : {false, true}) {
    Case c;
    c.op = "moe_sum";
    c.shape = "bf16 " + std::to_string(s->tokens) + "x" + std::to_string(s->k) + "x" +
              std::to_string(s->cols);
    c.direction = backward ? "bwd" : "fwd";
    c.bytes = backward ? 2.0 * nx * 2 + nd * 2 + 2.0 * nw * 4 : nx * 2.0 + nd * 2 + nw * 4;
    c.prepare =
        rotating_sets([s, d, backward] { return std::make_unique<Tensors>(d, *s, backward); },
                      [s, d, backward](Tensors& t, Stream st) { call(backward, t, *s, d, st); });
    c.check = [s, d, backward] { return check(backward, *s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
