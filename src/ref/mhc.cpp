#include "ref/mhc.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/element.h"

namespace kiln::ref {

// The reference keeps every iterate (it is the oracle, not the fast path): the input of each row
// and each column normalisation, then walks them back.
void sinkhorn_matrix(int n, int iters, double eps, std::span<const double> logits,
                     std::span<double> out, std::span<const double> dout,
                     std::span<double> dlogits) {
  const size_t nn = static_cast<size_t>(n) * n;
  const double top = *std::max_element(logits.begin(), logits.end());
  std::vector<double> a0(nn);
  for (size_t e = 0; e < nn; ++e) a0[e] = std::exp(logits[e] - top);
  // inputs[2t] feeds iteration t's row step, inputs[2t + 1] its column step.
  std::vector<std::vector<double>> inputs;
  std::vector<double> a = a0;
  for (int t = 0; t < iters; ++t) {
    inputs.push_back(a);
    for (int i = 0; i < n; ++i) {
      double s = 0;
      for (int j = 0; j < n; ++j) s += a[i * n + j];
      for (int j = 0; j < n; ++j) a[i * n + j] /= s + eps;
    }
    inputs.push_back(a);
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int i = 0; i < n; ++i) s += a[i * n + j];
      for (int i = 0; i < n; ++i) a[i * n + j] /= s + eps;
    }
  }
  std::copy(a.begin(), a.end(), out.begin());
  if (dout.empty()) return;
  // y = x / (s + eps), s = the line's sum: dx = (dy - sum(dy * y)) / (s + eps) along the line.
  std::vector<double> g(dout.begin(), dout.end());
  for (int step = 2 * iters - 1; step >= 0; --step) {
    const std::vector<double>& x = inputs[step];
    const bool rows = step % 2 == 0;
    for (int line = 0; line < n; ++line) {
      auto at = [&](int k) { return rows ? line * n + k : k * n + line; };
      double s = 0, dot = 0;
      for (int k = 0; k < n; ++k) s += x[at(k)];
      for (int k = 0; k < n; ++k) dot += g[at(k)] * x[at(k)] / (s + eps);
      for (int k = 0; k < n; ++k) g[at(k)] = (g[at(k)] - dot) / (s + eps);
    }
  }
  for (size_t e = 0; e < nn; ++e) dlogits[e] = g[e] * a0[e];
}

void sinkhorn_knopp(const SinkhornProblem& p) {
  using element::load;
  using element::store;
  const int n = p.n;
  const size_t nn = static_cast<size_t>(n) * n;
  std::vector<double> logits(nn), out(nn), dout(p.backward ? nn : 0), dl(p.backward ? nn : 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    auto index = [&](const check::RowMatrix& m, int i, int j) {
      return (b * n + i) * m.row_stride + j;
    };
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        logits[i * n + j] = load(p.logits.data, p.dtype, index(p.logits, i, j));
        if (p.backward) dout[i * n + j] = load(p.dout.data, p.dtype, index(p.dout, i, j));
      }
    }
    sinkhorn_matrix(n, p.iters, p.eps, logits, out, dout, dl);
    const std::vector<double>& result = p.backward ? dl : out;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) store(p.out.data, p.dtype, index(p.out, i, j), result[i * n + j]);
    }
  }
}

}  // namespace kiln::ref
