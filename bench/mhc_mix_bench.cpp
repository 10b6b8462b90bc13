// Benchmark cases of the mHC stream mixing at n = 4 streams of C = 8192 (a 7-8B-class hidden),
// T = 4096 tokens (x: 256 MiB of bf16; 1024 with --quick), bf16 streams with per-token f32 H's
// (the dynamic mHC case; a static H broadcast over T reads less). Bytes: each input read once +
// each output written once:
//   pre  fwd: x + H_pre read, h written;      bwd: dh + x + H_pre read, dx + dH_pre written
//   post fwd: x + y + H_res + H_post read, x' written
//   post bwd: dx' + x + y + H_res + H_post read, dx + dy + dH_res + dH_post written
#include <memory>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/mhc.h"

namespace kiln::bench {
namespace {

constexpr int64_t kN = 4, kCols = 8192;
enum class Kind { pre_fwd, pre_bwd, post_fwd, post_bwd };

struct Shape {
  int64_t tokens;
  std::vector<uint8_t> streams, rows, g_streams, g_rows, h_res, h_vec;  // host inputs
};

// Device (or host) buffers of one call: the inputs it reads, the outputs it writes, nothing more.
struct Tensors {
  Buffer x, y, g_streams, g_rows, h_res, h_vec;  // inputs (h_vec: H_pre or H_post)
  Buffer out_streams, out_rows, out_res, out_vec;
  Tensors(const Device& d, const Shape& s, Kind k) {
    const bool post = k == Kind::post_fwd || k == Kind::post_bwd;
    const bool bwd = k == Kind::pre_bwd || k == Kind::post_bwd;
    auto input = [&](Buffer& b, const std::vector<uint8_t>& host, bool used) {
      b = Buffer(d, used ? host.size() : 0);
      if (used) b.upload(host.data(), host.size());
    };
    input(x, s.streams, true);
    input(h_vec, s.h_vec, true);
    input(y, s.rows, post);
    input(h_res, s.h_res, post);
    input(g_streams, s.g_streams, post && bwd);
    input(g_rows, s.g_rows, !post && bwd);
    out_streams = Buffer(d, post || bwd ? s.streams.size() : 0);
    out_rows = Buffer(d, post != bwd ? 0 : s.rows.size());
    out_res = Buffer(d, post && bwd ? s.h_res.size() : 0);
    out_vec = Buffer(d, bwd ? s.h_vec.size() : 0);
  }
};

void call(Kind k, Tensors& t, const Shape& s, const Device& d, Stream stream) {
  const int64_t T = s.tokens;
  auto streams = [&](const Buffer& b) {
    return TensorView(b.data(), DType::bf16, d, {T, kN, kCols});
  };
  auto rows = [&](const Buffer& b) { return TensorView(b.data(), DType::bf16, d, {T, kCols}); };
  const TensorView h_res(t.h_res.data(), DType::f32, d, {T, kN, kN});
  const TensorView h_vec(t.h_vec.data(), DType::f32, d, {T, kN});
  const TensorView out_vec(t.out_vec.data(), DType::f32, d, {T, kN});
  switch (k) {
    case Kind::pre_fwd:
      mhc_pre_mix(rows(t.out_rows), streams(t.x), h_vec, stream);
      break;
    case Kind::pre_bwd:
      mhc_pre_mix_backward(streams(t.out_streams), out_vec, rows(t.g_rows), streams(t.x), h_vec,
                           stream);
      break;
    case Kind::post_fwd:
      mhc_post_mix(streams(t.out_streams), streams(t.x), rows(t.y), h_res, h_vec, stream);
      break;
    case Kind::post_bwd:
      mhc_post_mix_backward(streams(t.out_streams), rows(t.out_rows),
                            TensorView(t.out_res.data(), DType::f32, d, {T, kN, kN}), out_vec,
                            streams(t.g_streams), streams(t.x), rows(t.y), h_res, h_vec, stream);
      break;
  }
}

std::string check(Kind k, const Shape& s, const Device& d) {
  Tensors dev(d, s, k), ref(Device::cpu(), s, k);
  for (Buffer* b : {&dev.out_streams, &dev.out_rows, &dev.out_res, &dev.out_vec}) {
    if (b->bytes()) b->fill_nan();
  }
  call(k, dev, s, d, nullptr);
  synchronize(d);
  if (d.is_cpu()) return "ok (reference is the backend)";
  call(k, ref, s, Device::cpu(), nullptr);
  std::string bad;
  auto cmp = [&](const Buffer& got, const Buffer& want, DType dt, double tol, const char* what) {
    if (bad.empty() && got.bytes()) bad = compare(got, want, dt, tol, what);
  };
  cmp(dev.out_streams, ref.out_streams, DType::bf16, 1e-2, "streams out");
  cmp(dev.out_rows, ref.out_rows, DType::bf16, 1e-2, "rows out");
  cmp(dev.out_res, ref.out_res, DType::f32, 1e-4, "dh_res");
  cmp(dev.out_vec, ref.out_vec, DType::f32, 1e-4, k == Kind::pre_bwd ? "dh_pre" : "dh_post");
  return bad.empty() ? "ok" : bad;
}

}  // namespace

std::vector<Case> mhc_mix_cases(const Options& options) {
  std::vector<Case> cases;
  const Device d = options.device;
  auto s = std::make_shared<Shape>();
  s->tokens = d.is_cpu() ? 16 : options.quick ? 1024 : 4096;
  const int64_t T = s->tokens, ns = T * kN * kCols, nr = T * kCols;
  HostRandom random(ns);
  s->streams.resize(ns * 2);
  s->g_streams.resize(ns * 2);
  s->rows.resize(nr * 2);
  s->g_rows.resize(nr * 2);
  s->h_res.resize(T * kN * kN * 4);
  s->h_vec.resize(T * kN * 4);
  random.fill(s->streams.data(), DType::bf16, ns);
  random.fill(s->g_streams.data(), DType::bf16, ns);
  random.fill(s->rows.data(), DType::bf16, nr);
  random.fill(s->g_rows.data(), DType::bf16, nr);
  random.fill(s->h_res.data(), DType::f32, T * kN * kN, 0.25, 0.1);
  random.fill(s->h_vec.data(), DType::f32, T * kN, 0.5, 0.2);
  const double xs = ns * 2.0, rs = nr * 2.0, hr = T * kN * kN * 4.0, hv = T * kN * 4.0;
  const struct {
    Kind kind;
    const char *op, *dir;
    double bytes;
  } kinds[] = {{Kind::pre_fwd, "mhc_pre_mix", "fwd", xs + hv + rs},
               {Kind::pre_bwd, "mhc_pre_mix", "bwd", rs + xs + hv + xs + hv},
               {Kind::post_fwd, "mhc_post_mix", "fwd", xs + rs + hr + hv + xs},
               {Kind::post_bwd, "mhc_post_mix", "bwd", 2 * xs + rs + hr + hv + xs + rs + hr + hv}};
  for (const auto& k : kinds) {
    Case c;
    c.op = k.op;
    c.shape = "bf16 " + std::to_string(T) + "x" + std::to_string(kN) + "x" + std::to_string(kCols);
    c.direction = k.dir;
    c.bytes = k.bytes;
    const Kind kind = k.kind;
    c.prepare = rotating_sets([s, d, kind] { return std::make_unique<Tensors>(d, *s, kind); },
                              [s, d, kind](Tensors& t, Stream st) { call(kind, t, *s, d, st); });
    c.check = [s, d, kind] { return check(kind, *s, d); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
