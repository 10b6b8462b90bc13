#include "ref/moe_sum.h"

#include "core/element.h"

namespace kiln::ref {

void moe_sum(const MoeSumProblem& p) {
  using element::load;
  using element::store;
  auto w = [&](int64_t t, int64_t j) {
    return p.weights.data
               ? load(p.weights.data, p.w_dtype, t * p.weights.row_stride + j * p.w_k_stride)
               : 1.0;
  };
  auto x_at = [&](int64_t t, int64_t j, int64_t n) {
    return t * p.x_token_stride + j * p.x.row_stride + n;
  };
  for (int64_t t = 0; t < p.tokens; ++t) {
    if (!p.backward) {
      for (int64_t n = 0; n < p.cols; ++n) {
        double s = 0;
        for (int64_t j = 0; j < p.k; ++j) s += w(t, j) * load(p.x.data, p.dtype, x_at(t, j, n));
        store(p.out.data, p.dtype, t * p.out.row_stride + n, s);
      }
      continue;
    }
    for (int64_t j = 0; j < p.k; ++j) {
      double dot = 0;
      for (int64_t n = 0; n < p.cols; ++n) {
        const double g = load(p.out.data, p.dtype, t * p.out.row_stride + n);
        dot += g * load(p.x.data, p.dtype, x_at(t, j, n));
        store(p.dx.data, p.dtype, t * p.dx_token_stride + j * p.dx.row_stride + n, w(t, j) * g);
      }
      if (p.dweights.data) store(p.dweights.data, p.w_dtype, t * p.dweights.row_stride + j, dot);
    }
  }
}

}  // namespace kiln::ref
