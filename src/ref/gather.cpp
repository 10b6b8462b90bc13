#include "ref/gather.h"

#include <cstring>

namespace kiln::ref {

void gather_rows(const GatherProblem& p) {
  for (int64_t m = 0; m < p.m; ++m) {
    const int64_t i = p.index64 ? static_cast<const int64_t*>(p.index)[m]
                                : static_cast<const int32_t*>(p.index)[m];
    const bool ok = i >= 0 && i < p.n;
    if (!ok && p.bad_indices != nullptr) ++*p.bad_indices;
    for (const GatherRows* g : {&p.a, &p.b}) {
      if (g->src == nullptr) continue;
      char* dst = static_cast<char*>(g->out) + m * g->out_stride_bytes;
      if (ok) {
        std::memcpy(dst, static_cast<const char*>(g->src) + i * g->src_stride_bytes, g->row_bytes);
      } else {
        std::memset(dst, 0, g->row_bytes);
      }
    }
  }
}

}  // namespace kiln::ref
