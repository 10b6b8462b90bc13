#include "ref/kv_cache.h"

#include "core/element.h"

namespace kiln::ref {

void kv_cache_write(const KvCacheProblem& p) {
  using element::load;
  using element::store;
  const int64_t row = p.heads * p.head_dim;
  for (int64_t t = 0; t < p.tokens; ++t) {
    const int64_t slot = p.slots64 ? static_cast<const int64_t*>(p.slots)[t]
                                   : static_cast<const int32_t*>(p.slots)[t];
    if (slot < 0) continue;  // padding
    if (slot >= p.capacity) {
      if (p.bad_slots != nullptr) ++*p.bad_slots;
      continue;
    }
    for (int64_t e = 0; e < row; ++e) {
      // The scale divides in fp32, as the kernel does; store() then rounds to the cache's dtype.
      const float scale = p.scale ? p.scale[p.scale_per_head ? e / p.head_dim : 0] : 1.f;
      const float kv[2] = {static_cast<float>(load(p.k, p.dtype, t * p.k_stride + e)) / scale,
                           static_cast<float>(load(p.v, p.dtype, t * p.v_stride + e)) / scale};
      store(p.key_cache, p.cache_dtype, slot * row + e, kv[0]);
      store(p.value_cache, p.cache_dtype, slot * row + e, kv[1]);
    }
  }
}

}  // namespace kiln::ref
