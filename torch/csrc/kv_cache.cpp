// torch.ops.kiln.kv_cache_write (include/kiln/ops/kv_cache.h): in place on both caches; returns a
// fresh int32 [1] count of slots past the cache (never written; the op never synchronises), or
// with count_bad=False an empty int32 [0] (not counted, no fill kernel: bad_count.h).
// Fake impl: torch/kiln/_ops/kv_cache.py.
#include <torch/library.h>

#include <optional>

#include "bad_count.h"
#include "kiln/ops/kv_cache.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

at::Tensor kv_cache_write_op(at::Tensor& key_cache, at::Tensor& value_cache, const at::Tensor& k,
                             const at::Tensor& v, const at::Tensor& slot_mapping,
                             const std::optional<at::Tensor>& kv_scale, bool count_bad) {
  return translate_errors([&] {
    constexpr std::string_view op = "kv_cache_write";
    const DeviceScope scope(k);
    at::Tensor bad = bad_count(k, count_bad);
    kiln::kv_cache_write(
        to_view(op, "key_cache", key_cache), to_view(op, "value_cache", value_cache),
        to_view(op, "k", k), to_view(op, "v", v), to_view(op, "slot_mapping", slot_mapping),
        to_view(op, "kv_scale", kv_scale), bad_count_view(op, "bad_slots", bad), scope.stream());
    return bad;
  });
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.kv_cache");
  // In place: k, v [T, Hkv, D] into the paged caches by slot; returns the bad-slot count.
  m.def(
      "kv_cache_write(Tensor(a!) key_cache, Tensor(b!) value_cache, Tensor k, Tensor v, "
      "Tensor slot_mapping, Tensor? kv_scale, bool count_bad=True) -> Tensor");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  m.impl("kv_cache_write", &kiln::torch_binding::kv_cache_write_op);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  m.impl("kv_cache_write", &kiln::torch_binding::kv_cache_write_op);
}
#endif
