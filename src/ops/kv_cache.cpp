// Entry point of kv_cache_write: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/kv_cache.h"

#include <string>
#include <utility>

#include "core/backend.h"
#include "core/check.h"
#include "cuda/kv_cache/kv_cache_launch.h"
#include "ops/kv_cache_problem.h"
#include "ref/kv_cache.h"

namespace kiln {
namespace {

// k or v [T, Hkv, D] with each token's [Hkv, D] contiguous; returns the token stride.
int64_t token_stride(std::string_view op, std::string_view arg, const TensorView& t,
                     const TensorView& like) {
  check::present(op, arg, t);
  check::same_device(op, arg, t, like.device);
  check::same_dtype(op, arg, t, like.dtype);
  check::same_shape(op, arg, t, like);
  if ((t.size(2) > 1 && t.stride(2) != 1) || (t.size(1) > 1 && t.stride(1) != t.size(2))) {
    throw_arg_error(op, arg, "each token's [Hkv, D] contiguous", "strides that are not");
  }
  return t.size(0) > 1 ? t.stride(0) : t.size(1) * t.size(2);
}

}  // namespace

void kv_cache_write(const TensorView& key_cache, const TensorView& value_cache, const TensorView& k,
                    const TensorView& v, const TensorView& slot_mapping, const TensorView& kv_scale,
                    const TensorView& bad_slots, Stream stream) {
  constexpr std::string_view op = "kv_cache_write";
  check::present(op, "k", k);
  check::dtype_in(op, "k", k, {DType::bf16, DType::f16});
  if (k.rank != 3) throw_arg_error(op, "k", "rank 3 ([T, Hkv, D])", "shape " + k.shape_str());
  KvCacheProblem p;
  p.op = op;
  p.device = k.device;
  p.dtype = k.dtype;
  p.tokens = k.size(0);
  p.heads = k.size(1);
  p.head_dim = k.size(2);
  p.k = k.data;
  p.v = v.data;
  p.k_stride = token_stride(op, "k", k, k);
  p.v_stride = token_stride(op, "v", v, k);
  check::present(op, "key_cache", key_cache);
  p.cache_dtype = key_cache.dtype;
  if (p.cache_dtype != k.dtype && p.cache_dtype != DType::f8e4m3) {
    throw_arg_error(op, "key_cache",
                    "dtype " + std::string(dtype_name(k.dtype)) + " (k's) or f8e4m3",
                    dtype_name(p.cache_dtype));
  }
  for (auto [name, c] : {std::pair<const char*, const TensorView*>{"key_cache", &key_cache},
                         {"value_cache", &value_cache}}) {
    check::present(op, name, *c);
    check::same_device(op, name, *c, k.device);
    check::same_dtype(op, name, *c, p.cache_dtype);
    if (c->rank != 4 || c->size(2) != p.heads || c->size(3) != p.head_dim || !c->is_contiguous()) {
      throw_arg_error(op, name,
                      "a contiguous [num_blocks, block_size, " + std::to_string(p.heads) + ", " +
                          std::to_string(p.head_dim) + "]",
                      "shape " + c->shape_str());
    }
  }
  check::same_shape(op, "value_cache", value_cache, key_cache);
  p.key_cache = key_cache.data;
  p.value_cache = value_cache.data;
  p.capacity = key_cache.size(0) * key_cache.size(1);
  check::present(op, "slot_mapping", slot_mapping);
  check::same_device(op, "slot_mapping", slot_mapping, k.device);
  check::dtype_in(op, "slot_mapping", slot_mapping, {DType::i32, DType::i64});
  check::vector_of(op, "slot_mapping", slot_mapping, p.tokens);
  p.slots = slot_mapping.data;
  p.slots64 = slot_mapping.dtype == DType::i64;
  if (p.cache_dtype == DType::f8e4m3) {
    check::present(op, "kv_scale", kv_scale);
    check::same_device(op, "kv_scale", kv_scale, k.device);
    check::dtype_in(op, "kv_scale", kv_scale, {DType::f32});
    if (kv_scale.rank != 1 || (kv_scale.size(0) != 1 && kv_scale.size(0) != p.heads)) {
      throw_arg_error(op, "kv_scale", "f32 [1] or [" + std::to_string(p.heads) + "]",
                      "shape " + kv_scale.shape_str());
    }
    check::vector_of(op, "kv_scale", kv_scale, kv_scale.size(0));
    p.scale = static_cast<const float*>(kv_scale.data);
    p.scale_per_head = kv_scale.size(0) == p.heads && p.heads > 1;
  } else if (kv_scale.defined()) {
    throw_arg_error(op, "kv_scale",
                    "absent for a " + std::string(dtype_name(p.cache_dtype)) + " cache",
                    "a tensor");
  }
  p.bad_slots = check::optional_counter(op, "bad_slots", bad_slots, k.device);
  run_on_backend(
      p, "ref::kv_cache_write", [&] { ref::kv_cache_write(p); },
      [&] { return cuda::kv_cache_write(p, stream); });
}

}  // namespace kiln
