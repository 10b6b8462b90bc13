// Benchmark cases of FP8 quantization, bf16 16384 x 8192 (M tokens x an MLP's width) to e4m3:
// per 1x128 group (DeepSeek-V3's activations; row-major and MN-major scales), per tensor
// (dynamic: the absmax pass then the quantization), per row, per 128x128 block; and the group
// dequantization back to bf16. Each is checked against the reference first, bit for bit (values,
// scales, dequantized output). Bytes: x read once + values written + scales written (per-tensor
// dynamic reads x twice but is counted once, so its ceiling is 3/5 of a copy's rate);
// dequantization: values and scales read + out written.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/quantize.h"

namespace kiln::bench {
namespace {

enum class Kind { group, group_mn, tensor, row, block, dequant_group };
struct QuantCase {
  const char* label;
  Kind kind;
  QuantGranularity g;
};
constexpr QuantCase kCases[] = {
    {"group", Kind::group, QuantGranularity::group},
    {"group, MN-major scales", Kind::group_mn, QuantGranularity::group},
    {"tensor (dynamic)", Kind::tensor, QuantGranularity::tensor},
    {"row", Kind::row, QuantGranularity::row},
    {"block", Kind::block, QuantGranularity::block},
    {"group", Kind::dequant_group, QuantGranularity::group},
};

struct QuantShape {
  int64_t m, n;
  std::vector<uint8_t> x;  // bf16
  int64_t groups() const { return (n + 127) / 128; }
  // Scale rows and columns of a granularity, and the MN-major column stride.
  int64_t scale_rows(QuantGranularity g) const {
    return g == QuantGranularity::tensor ? 1 : g == QuantGranularity::block ? (m + 127) / 128 : m;
  }
  int64_t scale_cols(QuantGranularity g) const {
    return g == QuantGranularity::group || g == QuantGranularity::block ? groups() : 1;
  }
  int64_t m4() const { return (m + 3) / 4 * 4; }
};

struct QuantTensors {
  Buffer x, values, scales, workspace, out;
  QuantTensors(const Device& d, const QuantShape& s, const QuantCase& c)
      : x(d, s.x.size()),
        values(d, s.m * s.n),
        scales(d, 4 * (c.kind == Kind::group_mn ? s.groups() * s.m4()
                                                : s.scale_rows(c.g) * s.scale_cols(c.g))),
        workspace(d, c.kind == Kind::tensor && d.is_cuda() ? 4 : 0),
        out(d, c.kind == Kind::dequant_group ? s.m * s.n * 2 : 0) {
    x.upload(s.x.data(), s.x.size());
  }
  TensorView scale_view(const QuantShape& s, const QuantCase& c, const Device& d) const {
    if (c.g == QuantGranularity::tensor) return TensorView(scales.data(), DType::f32, d, {1});
    const int64_t rows = s.scale_rows(c.g), cols = s.scale_cols(c.g);
    const int64_t sizes[2] = {rows, cols};
    const int64_t strides[2] = {c.kind == Kind::group_mn ? 1 : cols,
                                c.kind == Kind::group_mn ? s.m4() : 1};
    return TensorView(scales.data(), DType::f32, d, sizes, strides);
  }
};

void quantize_call(QuantTensors& t, const QuantShape& s, const QuantCase& c, const Device& d,
                   Stream stream) {
  QuantConfig config;
  config.granularity = c.g;
  quantize_fp8(TensorView(t.values.data(), DType::f8e4m3, d, {s.m, s.n}), t.scale_view(s, c, d),
               TensorView(t.x.data(), DType::bf16, d, {s.m, s.n}), config,
               Workspace{t.workspace.data(), t.workspace.bytes()}, stream);
}

void dequantize_call(QuantTensors& t, const QuantShape& s, const QuantCase& c, const Device& d,
                     Stream stream) {
  dequantize_fp8(TensorView(t.out.data(), DType::bf16, d, {s.m, s.n}),
                 TensorView(t.values.data(), DType::f8e4m3, d, {s.m, s.n}), t.scale_view(s, c, d),
                 c.g, stream);
}

// The op under test; a dequantization case quantizes its input once, at preparation.
std::unique_ptr<QuantTensors> prepare(const QuantShape& s, const QuantCase& c, const Device& d) {
  auto t = std::make_unique<QuantTensors>(d, s, c);
  if (c.kind == Kind::dequant_group) {
    quantize_call(*t, s, c, d, nullptr);
    synchronize(d);
  }
  return t;
}

void call(QuantTensors& t, const QuantShape& s, const QuantCase& c, const Device& d,
          Stream stream) {
  if (c.kind == Kind::dequant_group) return dequantize_call(t, s, c, d, stream);
  quantize_call(t, s, c, d, stream);
}

// "" when got's bytes equal want's, else "<what>: <count> bytes differ".
std::string differing(const Buffer& got, const Buffer& want, const std::string& what) {
  std::vector<uint8_t> g(got.bytes()), w(want.bytes());
  got.download(g.data(), g.size());
  want.download(w.data(), w.size());
  size_t differ = 0;
  for (size_t i = 0; i < g.size(); ++i) differ += g[i] != w[i];
  return differ == 0 ? "" : what + ": " + std::to_string(differ) + " bytes differ; ";
}

// The device's outputs (poisoned first) against the reference on the same input, bit for bit.
// MN-major scales leave a pad the kernel never writes: both buffers start poisoned alike.
std::string check(const QuantShape& s, const QuantCase& c, const Device& d) {
  auto dev = prepare(s, c, d);
  QuantTensors ref(Device::cpu(), s, c);
  for (Buffer* b : {&dev->values, &dev->scales, &dev->out, &ref.values, &ref.scales, &ref.out}) {
    if (b->bytes() > 0 &&
        !(c.kind == Kind::dequant_group && (b == &dev->values || b == &dev->scales))) {
      b->fill_nan();
    }
  }
  call(*dev, s, c, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  std::string bad;
  if (c.kind == Kind::dequant_group) {
    // The reference dequantizes the device's values and scales.
    std::vector<uint8_t> host(dev->values.bytes());
    dev->values.download(host.data(), host.size());
    ref.values.upload(host.data(), host.size());
    host.resize(dev->scales.bytes());
    dev->scales.download(host.data(), host.size());
    ref.scales.upload(host.data(), host.size());
    dequantize_call(ref, s, c, Device::cpu(), nullptr);
    bad = differing(dev->out, ref.out, "out");
  } else {
    quantize_call(ref, s, c, Device::cpu(), nullptr);
    bad =
        differing(dev->values, ref.values, "values") + differing(dev->scales, ref.scales, "scales");
  }
  return bad.empty() ? "ok" : bad;
}

}  // namespace

std::vector<Case> quantize_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  auto s = std::make_shared<QuantShape>();
  s->m = d.is_cpu() ? 64 : options.quick ? 4096 : 16384;
  s->n = 8192;
  s->x.resize(s->m * s->n * 2);
  HostRandom(s->m * 29 + 1).fill(s->x.data(), DType::bf16, s->m * s->n, 0.0, 2.0);
  for (const QuantCase& qc : kCases) {
    Case c;
    const bool dequant = qc.kind == Kind::dequant_group;
    c.op = dequant ? "dequantize_fp8" : "quantize_fp8";
    c.shape = "bf16 " + std::to_string(s->m) + "x" + std::to_string(s->n) +
              (dequant ? " e4m3 -> bf16, " : " -> e4m3, ") + qc.label;
    c.direction = "fwd";
    const double elems = static_cast<double>(s->m) * s->n;
    const double scale_bytes = 4.0 * s->scale_rows(qc.g) * s->scale_cols(qc.g);
    c.bytes = 3 * elems + scale_bytes;  // bf16 read + e4m3 written, or e4m3 read + bf16 written
    c.prepare = rotating_sets([s, qc, d] { return prepare(*s, qc, d); },
                              [s, qc, d](QuantTensors& t, Stream st) { call(t, *s, qc, d, st); });
    c.check = [s, qc, d] { return check(*s, qc, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
