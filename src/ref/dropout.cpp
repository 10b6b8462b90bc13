#include "ref/dropout.h"

#include <vector>

#include "core/element.h"
#include "core/philox.h"

namespace kiln::ref {

void bias_dropout_add(const DropoutProblem& p) {
  using element::load;
  using element::store;
  std::vector<double> column_sum(p.backward && p.bias ? p.cols : 0, 0.0);
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t c = 0; c < p.cols; ++c) {
      const uint64_t i = static_cast<uint64_t>(r * p.cols + c);
      const bool keep = !p.masked || philox::uniform(p.seed, p.offset, i) >= p.p;
      const double scale = keep ? p.scale : 0.0;
      const double v = load(p.x.data, p.dtype, r * p.x.row_stride + c);
      if (p.backward) {
        store(p.out.data, p.dtype, r * p.out.row_stride + c, v * scale);
        if (p.bias) column_sum[c] += v * scale;
      } else {
        const double b = p.bias ? load(p.bias, p.dtype, c) : 0.0;
        const double res = load(p.residual.data, p.dtype, r * p.residual.row_stride + c);
        store(p.out.data, p.dtype, r * p.out.row_stride + c, res + (v + b) * scale);
      }
    }
  }
  for (int64_t c = 0; c < static_cast<int64_t>(column_sum.size()); ++c) {
    store(p.bias, p.dtype, c, column_sum[c]);
  }
}

}  // namespace kiln::ref
