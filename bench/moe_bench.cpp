// Benchmark cases of fused_moe at DeepSeek-V3's expert shapes (H = 7168, I = 2048, E = 256,
// k = 8, swiglu): prefill T = 8192, bf16 and w8a8 (FLOPs 6 T k H I, against the dense bf16 GEMM
// rate: the bars are 60% for bf16 and 1.5x bf16 for FP8), and decode T = 1, 16, 64, bf16
// and w8a16 (bytes = the touched experts' weights, one byte an FP8 weight plus its scales,
// against copy). The weights are one random expert written to all E (a host fill of 22 GB
// would take minutes; each expert still has its own memory, so nothing is reused in L2). The
// check runs the same path on a small problem (H = 256, I = 192, E = 16; T = 80 for the grouped
// path, the case's T for the GEMV kernels) against the float64 reference. On the CPU the timed
// shape is the check's.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "buffer.h"
#include "core/host_random.h"
#include "harness.h"
#include "kiln/ops/moe.h"

namespace kiln::bench {
namespace {

enum class Mode { bf16, w8a16, w8a8 };

struct Dims {
  int64_t tokens, hidden, inter, experts, k;
};

bool fp8(Mode m) {
  return m != Mode::bf16;
}

int64_t blocks(int64_t n) {
  return (n + 127) / 128;
}

// Each token picks k distinct experts (a shuffle seeded by T), weights renormalised to 1.
struct Routing {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  int64_t touched = 0;  // experts some token picks
};

Routing route(int64_t tokens, int64_t experts, int64_t k) {
  Routing r;
  std::mt19937_64 rng(tokens);
  std::vector<int32_t> perm(experts);
  r.ids.resize(tokens * k);
  r.weights.resize(tokens * k);
  std::set<int32_t> seen;
  for (int64_t t = 0; t < tokens; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    float sum = 0.f;
    for (int64_t j = 0; j < k; ++j) {
      r.ids[t * k + j] = perm[j];
      seen.insert(perm[j]);
      r.weights[t * k + j] = 0.1f + static_cast<float>(rng() % 1000) / 1000.f;
      sum += r.weights[t * k + j];
    }
    for (int64_t j = 0; j < k; ++j) r.weights[t * k + j] /= sum;
  }
  r.touched = static_cast<int64_t>(seen.size());
  return r;
}

// Inputs and outputs of one fused_moe call; `distinct_experts` fills every expert (the check),
// else one expert's weights go to all of them.
struct MoeTensors {
  Dims d;
  Mode mode;
  Buffer x, w13, w2, s13, s2, weights, ids, out, bad;

  MoeTensors(const Device& dev, Dims dims, Mode m, bool distinct_experts)
      : d(dims),
        mode(m),
        x(dev, d.tokens * d.hidden * 2),
        w13(dev, d.experts * 2 * d.inter * d.hidden * (fp8(m) ? 1 : 2)),
        w2(dev, d.experts * d.hidden * d.inter * (fp8(m) ? 1 : 2)),
        s13(dev, fp8(m) ? d.experts * blocks(2 * d.inter) * blocks(d.hidden) * 4 : 0),
        s2(dev, fp8(m) ? d.experts * blocks(d.hidden) * blocks(d.inter) * 4 : 0),
        weights(dev, d.tokens * d.k * 4),
        ids(dev, d.tokens * d.k * 4),
        out(dev, d.tokens * d.hidden * 2),
        bad(dev, 4) {
    HostRandom random(d.tokens * 7 + d.hidden);
    const DType wt = fp8(m) ? DType::f8e4m3 : DType::bf16;
    const int64_t wbytes = fp8(m) ? 1 : 2;
    std::vector<uint8_t> host(d.tokens * d.hidden * 2);
    random.fill(host.data(), DType::bf16, d.tokens * d.hidden);
    x.upload(host.data(), host.size());
    // A weight of `rows` x `cols` an expert: FP8 ones of scale 1 with block scales near
    // 1/sqrt(cols), bf16 ones of scale 1/sqrt(cols).
    auto fill = [&](Buffer& w, Buffer& s, int64_t rows, int64_t cols) {
      const int64_t n = rows * cols;
      const double std = fp8(m) ? 1.0 : 1.0 / std::sqrt(static_cast<double>(cols));
      std::vector<uint8_t> one(n * wbytes);
      for (int64_t e = 0; e < d.experts; ++e) {
        if (e == 0 || distinct_experts) random.fill(one.data(), wt, n, 0.0, std);
        w.upload(one.data(), one.size(), e * one.size());
      }
      if (fp8(m)) {
        const int64_t ns = d.experts * blocks(rows) * blocks(cols);
        std::vector<float> scales(ns);
        for (float& v : scales) {
          v = static_cast<float>((0.75 + 0.5 * (random.next() % 1000) / 1000.0) /
                                 std::sqrt(static_cast<double>(cols)));
        }
        s.upload(scales.data(), ns * 4);
      }
    };
    fill(w13, s13, 2 * d.inter, d.hidden);
    fill(w2, s2, d.hidden, d.inter);
    const Routing r = route(d.tokens, d.experts, d.k);
    ids.upload(r.ids.data(), r.ids.size() * 4);
    weights.upload(r.weights.data(), r.weights.size() * 4);
    const int32_t zero = 0;
    bad.upload(&zero, 4);
  }

  void call(const Device& dev, Stream stream) {
    const DType wt = fp8(mode) ? DType::f8e4m3 : DType::bf16;
    MoeWeightScales scales;
    if (fp8(mode)) {
      scales.w13 = TensorView(s13.data(), DType::f32, dev,
                              {d.experts, blocks(2 * d.inter), blocks(d.hidden)});
      scales.w2 =
          TensorView(s2.data(), DType::f32, dev, {d.experts, blocks(d.hidden), blocks(d.inter)});
      scales.fp8_activations = mode == Mode::w8a8;
    }
    fused_moe(TensorView(out.data(), DType::bf16, dev, {d.tokens, d.hidden}),
              TensorView(x.data(), DType::bf16, dev, {d.tokens, d.hidden}),
              TensorView(w13.data(), wt, dev, {d.experts, 2 * d.inter, d.hidden}),
              TensorView(w2.data(), wt, dev, {d.experts, d.hidden, d.inter}),
              TensorView(weights.data(), DType::f32, dev, {d.tokens, d.k}),
              TensorView(ids.data(), DType::i32, dev, {d.tokens, d.k}), MoeActivation::swiglu,
              TensorView(), TensorView(bad.data(), DType::i32, dev, {1}), scales, stream);
  }
};

std::string check(Dims small, Mode mode, const Device& dev) {
  MoeTensors got(dev, small, mode, true), want(Device::cpu(), small, mode, true);
  got.out.fill_nan();
  got.call(dev, nullptr);
  synchronize(dev);
  if (dev.is_cpu()) return "ok (reference is the backend)";
  want.call(Device::cpu(), nullptr);
  const std::string bad = compare(got.out, want.out, DType::bf16, 2e-2, "out");
  return bad.empty() ? "ok" : bad;
}

const char* mode_name(Mode m) {
  return m == Mode::bf16 ? "bf16" : m == Mode::w8a16 ? "w8a16" : "w8a8";
}

}  // namespace

std::vector<Case> moe_cases(const Options& options) {
  std::vector<Case> cases;
  const Device dev = options.device;
  struct Run {
    int64_t tokens;
    Mode mode;
  };
  std::vector<Run> runs;
  if (dev.is_cpu()) {
    runs = {{4, Mode::bf16}, {1, Mode::w8a16}};  // the float64 reference is the backend
  } else if (options.quick) {
    runs = {{2048, Mode::bf16}, {2048, Mode::w8a8}, {1, Mode::bf16}, {1, Mode::w8a16}};
  } else {
    runs = {{8192, Mode::bf16}, {8192, Mode::w8a8}, {64, Mode::bf16}, {64, Mode::w8a8},
            {16, Mode::bf16},   {16, Mode::w8a16},  {1, Mode::bf16},  {1, Mode::w8a16}};
  }
  for (const Run& run : runs) {
    const Dims big =
        dev.is_cpu() ? Dims{run.tokens, 128, 64, 16, 8} : Dims{run.tokens, 7168, 2048, 256, 8};
    // The check takes the path the timed call takes: the grouped GEMMs from 512 picks (and
    // always for w8a8), the GEMV kernels below.
    const bool grouped = run.tokens * 8 >= 512 || run.mode == Mode::w8a8;
    const Dims small{grouped ? 80 : std::min<int64_t>(run.tokens, 7), 256, 192, 16, 8};
    // Touched experts (the weights a call reads) for the byte count, from the routing it uses.
    const int64_t touched = route(big.tokens, big.experts, big.k).touched;
    Case c;
    c.op = "fused_moe";
    c.shape = std::string(mode_name(run.mode)) + " T" + std::to_string(big.tokens) + " H" +
              std::to_string(big.hidden) + " I" + std::to_string(big.inter) + " E" +
              std::to_string(big.experts) + " k8";
    c.direction = "fwd";
    const double weight_bytes =
        static_cast<double>(touched) * 3 * big.inter * big.hidden * (fp8(run.mode) ? 1 : 2);
    c.bytes = weight_bytes + 4.0 * big.tokens * big.hidden;  // + x read, out written
    if (grouped) c.flops = 6.0 * big.tokens * big.k * big.hidden * big.inter;
    const Mode mode = run.mode;
    c.prepare = rotating_sets(
        [dev, big, mode] { return std::make_unique<MoeTensors>(dev, big, mode, false); },
        [dev](MoeTensors& t, Stream st) { t.call(dev, st); });
    c.check = [small, mode, dev] { return check(small, mode, dev); };
    c.variant = [] { return last_receipt().variant; };
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::bench
