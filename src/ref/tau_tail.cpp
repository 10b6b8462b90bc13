#include "ref/tau_tail.h"

#include <cmath>

#include "core/element.h"

namespace kiln::ref {

void tau_tail(const TauProblem& p) {
  using element::load;
  using element::store;
  const int64_t hd = p.heads * p.head_dim;
  for (int64_t t = 0; t < p.tokens; ++t) {
    const int64_t pos = p.positions64 ? static_cast<const int64_t*>(p.positions)[t]
                                      : static_cast<const int32_t*>(p.positions)[t];
    if (pos < 0 || pos >= p.table_rows) {
      if (p.bad_positions != nullptr) ++*p.bad_positions;
      continue;
    }
    for (int64_t h = 0; h < p.heads; ++h) {
      const double tau = load(p.table, p.tau_dtype, pos * p.heads + h);
      for (int which = 0; which < 2; ++which) {  // q, then v
        const double tok =
            load(p.tok.data, p.tok_dtype, t * p.tok.row_stride + which * p.heads + h);
        const double scale = std::tanh(tok) + tau;
        const int64_t base = t * p.qkv.row_stride + (which == 0 ? 0 : 2 * hd) + h * p.head_dim;
        for (int64_t d = 0; d < p.head_dim; ++d) {
          store(p.qkv.data, p.dtype, base + d, load(p.qkv.data, p.dtype, base + d) * scale);
        }
      }
    }
  }
}

}  // namespace kiln::ref
