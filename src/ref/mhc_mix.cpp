#include "ref/mhc_mix.h"

#include <vector>

#include "core/element.h"

namespace kiln::ref {

void mhc_post_mix(const MhcPostMixProblem& p) {
  using element::load;
  using element::store;
  const int n = p.n;
  auto stream_at = [&](const MhcStreams& s, int64_t t, int i, int64_t c) {
    return t * s.token_stride + i * s.stream_stride + c;
  };
  auto h_res = [&](int64_t t, int j, int i) {
    const int64_t* st = p.h_res.strides;
    return double{p.h_res.data[t * st[0] + j * st[1] + i * st[2]]};
  };
  auto h_post = [&](int64_t t, int j) {
    return double{p.h_post.data[t * p.h_post.strides[0] + j * p.h_post.strides[1]]};
  };
  std::vector<double> x(n), g(n), dots(static_cast<size_t>(n) * n), post_dots(n);
  for (int64_t t = 0; t < p.tokens; ++t) {
    std::fill(dots.begin(), dots.end(), 0.0);
    std::fill(post_dots.begin(), post_dots.end(), 0.0);
    for (int64_t c = 0; c < p.cols; ++c) {
      const double y = load(p.y.data, p.dtype, t * p.y.row_stride + c);
      for (int i = 0; i < n; ++i) x[i] = load(p.x.data, p.dtype, stream_at(p.x, t, i, c));
      if (!p.backward) {
        for (int j = 0; j < n; ++j) {
          double s = h_post(t, j) * y;
          for (int i = 0; i < n; ++i) s += h_res(t, j, i) * x[i];
          store(p.x_out.data, p.dtype, stream_at(p.x_out, t, j, c), s);
        }
        continue;
      }
      for (int j = 0; j < n; ++j) g[j] = load(p.x_out.data, p.dtype, stream_at(p.x_out, t, j, c));
      double dy = 0;
      for (int j = 0; j < n; ++j) {
        dy += h_post(t, j) * g[j];
        post_dots[j] += g[j] * y;
        for (int i = 0; i < n; ++i) dots[j * n + i] += g[j] * x[i];
      }
      store(p.dy.data, p.dtype, t * p.dy.row_stride + c, dy);
      for (int i = 0; i < n; ++i) {
        double dx = 0;
        for (int j = 0; j < n; ++j) dx += h_res(t, j, i) * g[j];
        store(p.dx.data, p.dtype, stream_at(p.dx, t, i, c), dx);
      }
    }
    if (!p.backward) continue;
    for (int j = 0; j < n; ++j) {
      store(p.dh_post.data, DType::f32, t * p.dh_post.row_stride + j, post_dots[j]);
      for (int i = 0; i < n; ++i) {
        store(p.dh_res.data, DType::f32, (t * n + j) * p.dh_res.row_stride + i, dots[j * n + i]);
      }
    }
  }
}

}  // namespace kiln::ref
