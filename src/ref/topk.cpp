#include "ref/topk.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/element.h"

namespace kiln::ref {

void topk(const TopkProblem& p) {
  std::vector<int64_t> order(p.experts);
  std::vector<double> row(p.experts), picked(p.k);
  for (int64_t r = 0; r < p.rows; ++r) {
    for (int64_t e = 0; e < p.experts; ++e) {
      row[e] = element::load(p.scores.data, p.dtype, r * p.scores.row_stride + e);
    }
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return topk_before(row[a], a, row[b], b); });
    for (int64_t j = 0; j < p.k; ++j) picked[j] = row[order[j]];
    if (p.softmax) {
      // Sorted descending: the first picked value is the max (NaN propagates, as it should).
      const double top = picked[0];
      double sum = 0;
      for (double& v : picked) sum += v = std::exp(v - top);
      for (double& v : picked) v /= sum;
    }
    for (int64_t j = 0; j < p.k; ++j) {
      element::store(p.values.data, p.values_dtype, r * p.values.row_stride + j, picked[j]);
      static_cast<int32_t*>(p.indices.data)[r * p.indices.row_stride + j] =
          static_cast<int32_t>(order[j]);
    }
  }
}

}  // namespace kiln::ref
