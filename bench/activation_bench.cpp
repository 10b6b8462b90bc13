// Benchmark cases of the activation family, bf16, M = 16384 tokens, N = 8192 (an MLP's
// intermediate width): relu2 on x [M, N]; swiglu and gelu_residual (tanh) on the packed
// [M, 2N] input, y [M, N]. Bytes: each input read once, each output written once.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/element.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/activation.h"

namespace kiln::bench {
namespace {

enum class Act { relu2, swiglu, gelu_residual };
struct ActOp {
  const char* name;
  Act act;
};
constexpr ActOp kOps[] = {
    {"relu2", Act::relu2}, {"swiglu", Act::swiglu}, {"gelu_residual", Act::gelu_residual}};

// The input width: N for relu2, 2N (packed) for the gated ops.
int64_t in_cols(Act a, int64_t n) {
  return a == Act::relu2 ? n : 2 * n;
}

struct Tensors {
  Buffer in, dy, out, din;
  Tensors(const Device& d, const std::vector<uint8_t>& in_host, const std::vector<uint8_t>& dy_host,
          bool backward)
      : in(d, in_host.size()),
        dy(d, backward ? dy_host.size() : 0),
        out(d, backward ? 0 : dy_host.size()),
        din(d, backward ? in_host.size() : 0) {
    in.upload(in_host.data(), in_host.size());
    if (backward) dy.upload(dy_host.data(), dy_host.size());
  }
};

struct Shape {
  DType dtype;
  int64_t rows, n;
  std::vector<uint8_t> in, dy;  // host inputs
};

void call(Act act, bool backward, Tensors& t, const Shape& s, const Device& d, Stream stream) {
  const int64_t n_in = in_cols(act, s.n);
  const TensorView in(t.in.data(), s.dtype, d, {s.rows, n_in});
  if (!backward) {
    const TensorView y(t.out.data(), s.dtype, d, {s.rows, s.n});
    if (act == Act::relu2) relu2(y, in, stream);
    if (act == Act::swiglu) swiglu(y, in, stream);
    if (act == Act::gelu_residual) gelu_residual(y, in, GeluApprox::tanh, stream);
    return;
  }
  const TensorView dy(t.dy.data(), s.dtype, d, {s.rows, s.n});
  const TensorView din(t.din.data(), s.dtype, d, {s.rows, n_in});
  if (act == Act::relu2) relu2_backward(din, dy, in, stream);
  if (act == Act::swiglu) swiglu_backward(din, dy, in, stream);
  if (act == Act::gelu_residual) gelu_residual_backward(din, dy, in, GeluApprox::tanh, stream);
}

// Runs the op on the device (output poisoned) and on the reference; compares the output.
std::string check(Act act, bool backward, const Shape& s, const Device& d) {
  Tensors dev(d, s.in, s.dy, backward), ref(Device::cpu(), s.in, s.dy, backward);
  Buffer& out_dev = backward ? dev.din : dev.out;
  out_dev.fill_nan();
  call(act, backward, dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  call(act, backward, ref, s, Device::cpu(), nullptr);
  const std::string bad = compare(out_dev, backward ? ref.din : ref.out, s.dtype, 1e-2, "output");
  return bad.empty() ? "ok" : bad;
}

}  // namespace

std::vector<Case> activation_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  const int64_t rows = d.is_cpu() ? 64 : 16384;
  const int64_t n = options.quick ? 4096 : 8192;
  for (const ActOp& op : kOps) {
    auto s = std::make_shared<Shape>();
    s->dtype = DType::bf16;
    s->rows = rows;
    s->n = n;
    const int64_t n_in = in_cols(op.act, n);
    HostRandom random(rows * 17 + n_in);
    s->in.resize(rows * n_in * 2);
    s->dy.resize(rows * n * 2);
    random.fill(s->in.data(), s->dtype, rows * n_in, 0.0, 2.0);
    random.fill(s->dy.data(), s->dtype, rows * n, 0.0, 1.0);
    for (bool backward : {false, true}) {
      Case c;
      c.op = op.name;
      c.shape = "bf16 " + std::to_string(rows) + "x" + std::to_string(n_in);
      c.direction = backward ? "bwd" : "fwd";
      const double mat = rows * n * 2.0, mat_in = rows * n_in * 2.0;
      c.bytes = backward ? mat + 2 * mat_in : mat_in + mat;
      c.prepare =
          rotating_sets([act = op.act, s, d,
                         backward] { return std::make_unique<Tensors>(d, s->in, s->dy, backward); },
                        [act = op.act, s, d, backward](Tensors& t, Stream st) {
                          call(act, backward, t, *s, d, st);
                        });
      c.check = [act = op.act, s, d, backward] { return check(act, backward, *s, d); };
      c.variant = [] { return last_receipt().variant; };
      cases.push_back(std::move(c));
    }
  }
  return cases;
}

}  // namespace kiln::bench
