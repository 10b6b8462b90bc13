#include "ref/norm.h"

#include <cmath>
#include <vector>

#include "core/element.h"

namespace kiln::ref {
namespace {

using element::load;
using element::store;

struct RowStats {
  double mean = 0;
  double rstd = 0;
};

RowStats row_stats(NormKind kind, std::span<const double> x, double eps) {
  const double n = static_cast<double>(x.size());
  RowStats s;
  if (kind == NormKind::layer) {
    for (double e : x) s.mean += e;
    s.mean /= n;
  }
  double var = 0;
  for (double e : x) var += (e - s.mean) * (e - s.mean);
  s.rstd = 1.0 / std::sqrt(var / n + eps);
  return s;
}

// Loads an optional [N] parameter into `out`; returns null when absent.
const double* load_param(const void* data, DType dtype, int64_t n, std::vector<double>& out) {
  if (data == nullptr) return nullptr;
  out.resize(n);
  for (int64_t j = 0; j < n; ++j) out[j] = load(data, dtype, j);
  return out.data();
}

}  // namespace

void norm_forward_row(NormKind kind, std::span<const double> x, const double* weight,
                      const double* bias, double eps, std::span<double> y) {
  const RowStats s = row_stats(kind, x, eps);
  for (size_t j = 0; j < x.size(); ++j) {
    y[j] = (x[j] - s.mean) * s.rstd * (weight ? weight[j] : 1.0) + (bias ? bias[j] : 0.0);
  }
}

void norm_backward_row(NormKind kind, std::span<const double> x, std::span<const double> dy,
                       const double* weight, double eps, std::span<double> dx, double* dweight,
                       double* dbias) {
  const RowStats s = row_stats(kind, x, eps);
  const double n = static_cast<double>(x.size());
  double mean_wdy = 0, mean_xhat_wdy = 0;
  for (size_t j = 0; j < x.size(); ++j) {
    const double xhat = (x[j] - s.mean) * s.rstd;
    const double wdy = dy[j] * (weight ? weight[j] : 1.0);
    mean_wdy += wdy / n;
    mean_xhat_wdy += xhat * wdy / n;
    if (dweight) dweight[j] += dy[j] * xhat;
    if (dbias) dbias[j] += dy[j];
  }
  if (kind == NormKind::rms) mean_wdy = 0;  // no mean was subtracted in the forward
  for (size_t j = 0; j < x.size(); ++j) {
    const double xhat = (x[j] - s.mean) * s.rstd;
    const double wdy = dy[j] * (weight ? weight[j] : 1.0);
    dx[j] = s.rstd * (wdy - mean_wdy - xhat * mean_xhat_wdy);
  }
}

void norm_forward(const NormForwardProblem& p) {
  std::vector<double> w_store, b_store, v(p.cols), y(p.cols);
  const double* w = load_param(p.weight, p.param_dtype, p.cols, w_store);
  const double* b = load_param(p.bias, p.param_dtype, p.cols, b_store);
  for (int64_t i = 0; i < p.rows; ++i) {
    for (int64_t j = 0; j < p.cols; ++j) {
      v[j] = load(p.x.data, p.x.dtype, i * p.x.row_stride + j);
      if (p.residual.data) {
        const int64_t out = i * p.residual_out.row_stride + j;
        store(p.residual_out.data, p.x.dtype, out,
              v[j] + load(p.residual.data, p.x.dtype, i * p.residual.row_stride + j));
        v[j] = load(p.residual_out.data, p.x.dtype, out);  // normalise the rounded sum
      }
    }
    norm_forward_row(p.kind, v, w, b, p.eps, y);
    for (int64_t j = 0; j < p.cols; ++j) store(p.y.data, p.y.dtype, i * p.y.row_stride + j, y[j]);
  }
}

void norm_backward(const NormBackwardProblem& p) {
  std::vector<double> w_store, v(p.cols), dy(p.cols), dx(p.cols);
  std::vector<double> dw(p.dweight ? p.cols : 0, 0.0), db(p.dbias ? p.cols : 0, 0.0);
  const double* w = load_param(p.weight, p.param_dtype, p.cols, w_store);
  for (int64_t i = 0; i < p.rows; ++i) {
    for (int64_t j = 0; j < p.cols; ++j) {
      v[j] = load(p.x.data, p.x.dtype, i * p.x.row_stride + j);
      dy[j] = load(p.dy.data, p.dy.dtype, i * p.dy.row_stride + j);
    }
    norm_backward_row(p.kind, v, dy, w, p.eps, dx, p.dweight ? dw.data() : nullptr,
                      p.dbias ? db.data() : nullptr);
    for (int64_t j = 0; j < p.cols; ++j) {
      double d = dx[j];
      if (p.dresidual.data) d += load(p.dresidual.data, p.dx.dtype, i * p.dresidual.row_stride + j);
      // Stored after every read of row i: dx may alias dy.
      store(p.dx.data, p.dx.dtype, i * p.dx.row_stride + j, d);
    }
  }
  for (int64_t j = 0; j < p.cols; ++j) {
    if (p.dweight) store(p.dweight, p.param_dtype, j, dw[j]);
    if (p.dbias) store(p.dbias, p.param_dtype, j, db[j]);
  }
}

}  // namespace kiln::ref
