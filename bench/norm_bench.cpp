// Benchmark cases of the normalization family: the four ops, forward and backward, bf16, at
// M = 16384 rows and N in {2048, 4096, 8192} (Llama-3 8B's 4096, 70B's 8192).
// Bytes: forward x (+ residual) in, y (+ residual_out) out, weight (+ bias); backward x, dy
// (+ dresidual) in, dx out, weight in, dweight (+ dbias) out.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/norm.h"

namespace kiln::bench {
namespace {

struct NormOp {
  const char* name;
  bool layer;
  bool residual;
};
constexpr NormOp kOps[] = {{"rms_norm", false, false},
                           {"add_rms_norm", false, true},
                           {"layer_norm", true, false},
                           {"add_layer_norm", true, true}};
constexpr double kEps = 1e-5;

// Host inputs of one shape, shared by every case of that shape.
struct HostInputs {
  DType dtype;
  int64_t rows, cols;
  std::vector<uint8_t> x, residual, dy, weight, bias;
  size_t row_bytes() const { return cols * dtype_size(dtype); }
  size_t bytes() const { return rows * row_bytes(); }
};

std::shared_ptr<HostInputs> make_inputs(DType dtype, int64_t rows, int64_t cols) {
  auto h = std::make_shared<HostInputs>(HostInputs{dtype, rows, cols, {}, {}, {}, {}, {}});
  HostRandom random(rows * 131 + cols);
  for (auto* v : {&h->x, &h->residual, &h->dy}) {
    v->resize(h->bytes());
    random.fill(v->data(), dtype, rows * cols, 0.1, 1.0);
  }
  for (auto* v : {&h->weight, &h->bias}) {
    v->resize(h->row_bytes());
    random.fill(v->data(), dtype, cols, 0.5, 0.5);
  }
  return h;
}

// Device (or host) copies of the inputs and room for the outputs, for one rotation set.
struct Tensors {
  Buffer x, residual, dy, y, residual_out, dx;
  Tensors(const Device& d, const HostInputs& h, bool backward)
      : x(d, h.bytes()),
        residual(d, h.bytes()),
        dy(d, backward ? h.bytes() : 0),
        y(d, backward ? 0 : h.bytes()),
        residual_out(d, backward ? 0 : h.bytes()),
        dx(d, backward ? h.bytes() : 0) {
    x.upload(h.x.data(), h.bytes());
    residual.upload(h.residual.data(), h.bytes());
    if (backward) dy.upload(h.dy.data(), h.bytes());
  }
};

struct Params {
  Buffer weight, bias, dweight, dbias, workspace;
  Params(const Device& d, const HostInputs& h, size_t workspace_bytes)
      : weight(d, h.row_bytes()),
        bias(d, h.row_bytes()),
        dweight(d, h.row_bytes()),
        dbias(d, h.row_bytes()),
        workspace(d, workspace_bytes) {
    weight.upload(h.weight.data(), h.row_bytes());
    bias.upload(h.bias.data(), h.row_bytes());
  }
};

TensorView matrix(const Buffer& b, const HostInputs& h, const Device& d) {
  return TensorView(b.data(), h.dtype, d, {h.rows, h.cols});
}
TensorView vec(const Buffer& b, const HostInputs& h, const Device& d) {
  return TensorView(b.data(), h.dtype, d, {h.cols});
}

void forward(const NormOp& op, Tensors& t, Params& p, const HostInputs& h, const Device& d,
             Stream s) {
  const TensorView x = matrix(t.x, h, d), y = matrix(t.y, h, d), w = vec(p.weight, h, d);
  if (op.layer) {
    const TensorView b = vec(p.bias, h, d);
    if (op.residual) {
      add_layer_norm(y, matrix(t.residual_out, h, d), x, matrix(t.residual, h, d), w, b, kEps, s);
    } else {
      layer_norm(y, x, w, b, kEps, s);
    }
  } else if (op.residual) {
    add_rms_norm(y, matrix(t.residual_out, h, d), x, matrix(t.residual, h, d), w, kEps, s);
  } else {
    rms_norm(y, x, w, kEps, s);
  }
}

// Backward with x standing in for the normalised input (residual_out for the add variants)
// and residual standing in for dresidual: the same bytes and math.
void backward(const NormOp& op, Tensors& t, Params& p, const HostInputs& h, const Device& d,
              Stream s) {
  const Workspace ws{p.workspace.data(), p.workspace.bytes()};
  const TensorView dres = op.residual ? matrix(t.residual, h, d) : TensorView();
  if (op.layer) {
    layer_norm_backward(matrix(t.dx, h, d), vec(p.dweight, h, d), vec(p.dbias, h, d),
                        matrix(t.dy, h, d), matrix(t.x, h, d), vec(p.weight, h, d), kEps, dres, ws,
                        s);
  } else {
    rms_norm_backward(matrix(t.dx, h, d), vec(p.dweight, h, d), matrix(t.dy, h, d),
                      matrix(t.x, h, d), vec(p.weight, h, d), kEps, dres, ws, s);
  }
}

// Runs the op once on the device with poisoned outputs and once on the reference (host), and
// compares every output: y (+ residual_out) forward; dx, dweight (+ dbias) backward.
std::string check(const NormOp& op, bool is_backward, const HostInputs& h, const Device& d) {
  const Device cpu = Device::cpu();
  Tensors dev(d, h, is_backward), ref(cpu, h, is_backward);
  Params pdev(d, h, norm_backward_workspace_size(matrix(dev.x, h, d)));
  Params pref(cpu, h, 0);
  for (Buffer* b : {&dev.y, &dev.residual_out, &dev.dx, &pdev.dweight, &pdev.dbias}) {
    if (b->bytes()) b->fill_nan();
  }
  if (is_backward) {
    backward(op, dev, pdev, h, d, nullptr);
    if (d.is_cuda()) backward(op, ref, pref, h, cpu, nullptr);
  } else {
    forward(op, dev, pdev, h, d, nullptr);
    if (d.is_cuda()) forward(op, ref, pref, h, cpu, nullptr);
  }
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  const double tol = h.dtype == DType::f32 ? 1e-5 : 1e-2;
  struct Out {
    const char* name;
    const Buffer* dev;
    const Buffer* ref;
  };
  std::vector<Out> outs;
  if (is_backward) {
    outs = {{"dx", &dev.dx, &ref.dx}, {"dweight", &pdev.dweight, &pref.dweight}};
    if (op.layer) outs.push_back({"dbias", &pdev.dbias, &pref.dbias});
  } else {
    outs = {{"y", &dev.y, &ref.y}};
    if (op.residual) outs.push_back({"residual_out", &dev.residual_out, &ref.residual_out});
  }
  for (const Out& o : outs) {
    const std::string bad = compare(*o.dev, *o.ref, h.dtype, tol, o.name);
    if (!bad.empty()) return bad;
  }
  return "ok";
}

}  // namespace

std::vector<Case> norm_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  // On the CPU the reference is the backend: a small shape keeps `kiln bench` quick there.
  std::vector<int64_t> widths = {2048, 4096, 8192};
  int64_t rows = 16384;
  if (options.quick) widths = {4096};
  if (d.is_cpu()) rows = 64;
  for (int64_t cols : widths) {
    auto h = make_inputs(DType::bf16, rows, cols);
    const double e = static_cast<double>(dtype_size(h->dtype));
    const double mat = rows * cols * e, vecb = cols * e;
    for (const NormOp& op : kOps) {
      for (bool is_backward : {false, true}) {
        Case c;
        c.op = op.name;
        c.shape = "bf16 " + std::to_string(rows) + "x" + std::to_string(cols);
        c.direction = is_backward ? "bwd" : "fwd";
        const int mats = is_backward ? 3 + op.residual : 2 + 2 * op.residual;
        const int vecs = is_backward ? 2 + op.layer : 1 + op.layer;
        c.bytes = mats * mat + vecs * vecb;
        c.prepare = [op, h, d, is_backward](int sets) {
          auto state = std::make_shared<std::vector<Tensors>>();
          for (int i = 0; i < sets; ++i) state->emplace_back(d, *h, is_backward);
          auto params = std::make_shared<Params>(
              d, *h, norm_backward_workspace_size(matrix((*state)[0].x, *h, d)));
          return std::function<void(int, Stream)>(
              [op, h, d, is_backward, state, params](int set, Stream s) {
                if (is_backward) {
                  backward(op, (*state)[set], *params, *h, d, s);
                } else {
                  forward(op, (*state)[set], *params, *h, d, s);
                }
              });
        };
        c.check = [op, h, d, is_backward] { return check(op, is_backward, *h, d); };
        c.variant = [] { return last_receipt().variant; };
        cases.push_back(std::move(c));
      }
    }
  }
  return cases;
}

}  // namespace kiln::bench
