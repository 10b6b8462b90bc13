#include "ref/moe.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/element.h"
#include "ops/activation_math.h"
#include "ref/quantize.h"

namespace kiln::ref {
namespace {

// v rounded to a 16-bit dtype, as a kernel's intermediate store rounds it.
double rounded(DType dtype, double v) {
  uint64_t bits = 0;  // wide enough for any dtype the compiler sees in load/store's switch
  element::store(&bits, dtype, 0, v);
  return element::load(&bits, dtype, 0);
}

// w8a8: v [n] replaced by what its e4m3 quantization in 1 x 128 groups stands for,
// fp32(e4m3(v * (1 / scale))) * scale with scale = max(amax, 1e-4) / 448 per group: the values
// the CUDA path quantizes and the FP8 GEMM multiplies by the group's scale.
void fake_quantize_groups(std::vector<double>& v) {
  const int64_t n = static_cast<int64_t>(v.size());
  for (int64_t g = 0; g < n; g += 128) {
    const int64_t end = std::min(n, g + 128);
    float amax = 0.f;
    for (int64_t c = g; c < end; ++c) amax = std::fmax(amax, std::fabs(static_cast<float>(v[c])));
    const float scale = scale_of_amax(amax, 1e-4f, INFINITY, DType::f8e4m3);
    const float inv = 1.f / scale;
    for (int64_t c = g; c < end; ++c) {
      uint8_t q = 0;
      element::store(&q, DType::f8e4m3, 0, static_cast<float>(v[c]) * inv);
      v[c] = element::load(&q, DType::f8e4m3, 0) * static_cast<double>(scale);
    }
  }
}

}  // namespace

void fused_moe(const MoeProblem& p) {
  using element::load;
  using element::store;
  const int64_t rows13 = p.rows13();
  // A weight as the math sees it: FP8 ones times their 128 x 128 block's scale.
  const int64_t h_blocks = p.scale_blocks(p.hidden), i_blocks = p.scale_blocks(p.inter);
  const int64_t r13_blocks = p.scale_blocks(rows13);
  auto w13_at = [&](int64_t e, int64_t r, int64_t h) {
    const double w = load(p.w13, p.weight_dtype, (e * rows13 + r) * p.hidden + h);
    if (!p.fp8_weights()) return w;
    return w * p.w13_scale[(e * r13_blocks + r / 128) * h_blocks + h / 128];
  };
  auto w2_at = [&](int64_t e, int64_t h, int64_t i) {
    const double w = load(p.w2, p.weight_dtype, (e * p.hidden + h) * p.inter + i);
    if (!p.fp8_weights()) return w;
    return w * p.w2_scale[(e * h_blocks + h / 128) * i_blocks + i / 128];
  };
  const act::Kind kind = p.act_kind();
  std::vector<double> act(p.inter), sum(p.hidden), x(p.hidden);
  for (int64_t t = 0; t < p.tokens; ++t) {
    std::fill(sum.begin(), sum.end(), 0.0);
    for (int64_t h = 0; h < p.hidden; ++h) x[h] = load(p.x.data, p.dtype, t * p.x.row_stride + h);
    if (p.fp8_activations) fake_quantize_groups(x);
    for (int64_t j = 0; j < p.k; ++j) {
      const int32_t id = static_cast<const int32_t*>(p.ids.data)[t * p.ids.row_stride + j];
      const int64_t e = p.expert_map ? p.expert_map[id] : id;
      if (e < 0) continue;  // not held here
      const double w = load(p.weights.data, DType::f32, t * p.weights.row_stride + j);
      auto up_row = [&](int64_t r) {  // w13[e][r] · x[t]
        double dot = 0;
        for (int64_t h = 0; h < p.hidden; ++h) {
          dot += w13_at(e, r, h) * x[h];
        }
        return dot;
      };
      for (int64_t i = 0; i < p.inter; ++i) {
        const double a = up_row(i), b = p.gated() ? up_row(p.inter + i) : 0.0;
        act[i] = rounded(p.dtype, act::forward(kind, a, b));
      }
      if (p.fp8_activations) fake_quantize_groups(act);
      for (int64_t h = 0; h < p.hidden; ++h) {
        double dot = 0;
        for (int64_t i = 0; i < p.inter; ++i) {
          dot += w2_at(e, h, i) * act[i];
        }
        sum[h] += w * dot;
      }
    }
    for (int64_t h = 0; h < p.hidden; ++h)
      store(p.out.data, p.dtype, t * p.out.row_stride + h, sum[h]);
  }
}

}  // namespace kiln::ref
