// Benchmark cases of bias_dropout_add, bf16, M = 16384 tokens x N = 8192, p = 0.1, with bias.
// Bytes: forward x, residual read + out written (+ bias); backward dout read + dx written
// (+ dout read again and dbias written by the column kernel).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/element.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/dropout.h"

namespace kiln::bench {
namespace {

constexpr double kP = 0.1;
constexpr uint64_t kSeed = 0x5eed, kOffset = 1;

struct Shape {
  int64_t rows, cols;
  std::vector<uint8_t> x, residual, bias;
};

struct Tensors {
  Buffer x, residual, bias, out, dbias, workspace;
  Tensors(const Device& d, const Shape& s)
      : x(d, s.x.size()),
        residual(d, s.x.size()),
        bias(d, s.bias.size()),
        out(d, s.x.size()),
        dbias(d, s.bias.size()),
        workspace(d, bias_dropout_add_backward_workspace_size(
                         TensorView(x.data(), DType::bf16, d, {s.rows, s.cols}))) {
    x.upload(s.x.data(), s.x.size());
    residual.upload(s.residual.data(), s.residual.size());
    bias.upload(s.bias.data(), s.bias.size());
  }
};

void call(bool backward, Tensors& t, const Shape& s, const Device& d, Stream stream) {
  const TensorView x(t.x.data(), DType::bf16, d, {s.rows, s.cols});
  const TensorView out(t.out.data(), DType::bf16, d, {s.rows, s.cols});
  if (backward) {
    bias_dropout_add_backward(out, TensorView(t.dbias.data(), DType::bf16, d, {s.cols}), x, kP,
                              kSeed, kOffset, true, {t.workspace.data(), t.workspace.bytes()},
                              stream);
  } else {
    bias_dropout_add(out, x, TensorView(t.bias.data(), DType::bf16, d, {s.cols}),
                     TensorView(t.residual.data(), DType::bf16, d, {s.rows, s.cols}), kP, kSeed,
                     kOffset, true, stream);
  }
}

std::string check(bool backward, const Shape& s, const Device& d) {
  Tensors dev(d, s), ref(Device::cpu(), s);
  dev.out.fill_nan();
  dev.dbias.fill_nan();
  call(backward, dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  call(backward, ref, s, Device::cpu(), nullptr);
  std::string bad = compare(dev.out, ref.out, DType::bf16, 1e-2, backward ? "dx" : "out");
  if (bad.empty() && backward) bad = compare(dev.dbias, ref.dbias, DType::bf16, 1e-2, "dbias");
  return bad.empty() ? "ok" : bad;
}

}  // namespace

std::vector<Case> dropout_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  auto s = std::make_shared<Shape>();
  s->rows = d.is_cpu() ? 64 : 16384;
  s->cols = options.quick ? 4096 : 8192;
  HostRandom random(s->rows * 3 + s->cols);
  const int64_t n = s->rows * s->cols;
  s->x.resize(n * 2);
  s->residual.resize(n * 2);
  s->bias.resize(s->cols * 2);
  random.fill(s->x.data(), DType::bf16, n);
  random.fill(s->residual.data(), DType::bf16, n);
  random.fill(s->bias.data(), DType::bf16, s->cols);
  for (bool backward : {false, true}) {
    Case c;
    c.op = "bias_dropout_add";
    c.shape = "bf16 " + std::to_string(s->rows) + "x" + std::to_string(s->cols);
    c.direction = backward ? "bwd" : "fwd";
    const double mat = n * 2.0, vec = s->cols * 2.0;
    // fwd: x, residual, out, bias; bwd: dout, dx, dbias (dbias's fp32 partials are overhead).
    c.bytes = (backward ? 2 : 3) * mat + vec;
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
