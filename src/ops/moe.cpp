// Entry point of fused_moe: validate -> the CUDA kernels, or (ids and map values checked on the
// host too) the reference -> receipt.
#include "kiln/ops/moe.h"

#include <string>
#include <utility>

#include "core/backend.h"
#include "core/check.h"
#include "cuda/moe/fused_moe_launch.h"
#include "ops/moe_problem.h"
#include "ref/moe.h"

namespace kiln {
namespace {

std::string shape_of(std::initializer_list<int64_t> sizes) {
  std::string s = "[";
  for (int64_t v : sizes) s += (s.size() > 1 ? ", " : "") + std::to_string(v);
  return s + "]";
}

// A contiguous tensor of `sizes` and `dtype` on `device`.
void contiguous_tensor(std::string_view op, std::string_view arg, const TensorView& t, DType dtype,
                       const Device& device, std::initializer_list<int64_t> sizes) {
  check::present(op, arg, t);
  check::same_dtype(op, arg, t, dtype);
  check::same_device(op, arg, t, device);
  bool match = t.rank == static_cast<int>(sizes.size());
  int d = 0;
  for (int64_t s : sizes) match = match && t.size(d++) == s;
  if (!match) throw_arg_error(op, arg, "shape " + shape_of(sizes), t.shape_str());
  if (!t.is_contiguous()) throw_arg_error(op, arg, "a contiguous tensor", t.describe());
}

}  // namespace

void fused_moe(const TensorView& out, const TensorView& x, const TensorView& w13,
               const TensorView& w2, const TensorView& topk_weights, const TensorView& topk_ids,
               MoeActivation activation, const TensorView& expert_map, const TensorView& bad_ids,
               const MoeWeightScales& weight_scales, Stream stream) {
  constexpr std::string_view op = "fused_moe";
  MoeProblem p;
  p.op = op;
  check::present(op, "x", x);
  check::dtype_in(op, "x", x, {DType::bf16, DType::f16});
  if (x.rank != 2) throw_arg_error(op, "x", "rank 2 [T, H]", x.shape_str());
  p.device = x.device;
  p.dtype = x.dtype;
  p.activation = activation;
  p.tokens = x.size(0);
  p.hidden = x.size(1);
  check::present(op, "w13", w13);
  check::present(op, "w2", w2);
  if (w2.rank != 3) throw_arg_error(op, "w2", "rank 3 [E_local, H, I]", w2.shape_str());
  p.local_experts = w2.size(0);
  p.inter = w2.size(2);
  // Weights of x's dtype, or both f8e4m3 with their block scales.
  p.weight_dtype = w2.dtype == DType::f8e4m3 ? DType::f8e4m3 : x.dtype;
  if (w2.dtype != p.weight_dtype) {
    throw_arg_error(op, "w2", std::string(dtype_name(x.dtype)) + " (x's dtype) or f8e4m3",
                    std::string(dtype_name(w2.dtype)));
  }
  contiguous_tensor(op, "w2", w2, p.weight_dtype, p.device, {p.local_experts, p.hidden, p.inter});
  contiguous_tensor(op, "w13", w13, p.weight_dtype, p.device,
                    {p.local_experts, p.rows13(), p.hidden});
  if (p.fp8_weights()) {
    contiguous_tensor(op, "w13_scale", weight_scales.w13, DType::f32, p.device,
                      {p.local_experts, p.scale_blocks(p.rows13()), p.scale_blocks(p.hidden)});
    contiguous_tensor(op, "w2_scale", weight_scales.w2, DType::f32, p.device,
                      {p.local_experts, p.scale_blocks(p.hidden), p.scale_blocks(p.inter)});
    p.w13_scale = static_cast<const float*>(weight_scales.w13.data);
    p.w2_scale = static_cast<const float*>(weight_scales.w2.data);
    p.fp8_activations = weight_scales.fp8_activations;
  } else {
    if (weight_scales.fp8_activations) {
      throw_arg_error(op, "fp8_activations", "f8e4m3 weights (w8a8)",
                      std::string(dtype_name(x.dtype)) + " weights");
    }
    for (const auto& [arg, t] :
         {std::pair{"w13_scale", &weight_scales.w13}, std::pair{"w2_scale", &weight_scales.w2}}) {
      if (t->defined()) {
        throw_arg_error(op, arg, "absent with " + std::string(dtype_name(x.dtype)) + " weights",
                        t->describe());
      }
    }
  }
  check::present(op, "topk_ids", topk_ids);
  check::dtype_in(op, "topk_ids", topk_ids, {DType::i32});
  check::same_device(op, "topk_ids", topk_ids, p.device);
  if (topk_ids.rank != 2 || topk_ids.size(0) != p.tokens || topk_ids.size(1) < 1) {
    throw_arg_error(op, "topk_ids", "int32 [T = " + std::to_string(p.tokens) + ", k >= 1]",
                    topk_ids.describe());
  }
  p.k = topk_ids.size(1);
  check::present(op, "topk_weights", topk_weights);
  check::dtype_in(op, "topk_weights", topk_weights, {DType::f32});
  check::same_device(op, "topk_weights", topk_weights, p.device);
  if (topk_weights.rank != 2 || topk_weights.size(0) != p.tokens || topk_weights.size(1) != p.k) {
    throw_arg_error(op, "topk_weights", "f32 [T, k] like topk_ids", topk_weights.describe());
  }
  p.experts = p.local_experts;
  if (expert_map.defined()) {
    check::dtype_in(op, "expert_map", expert_map, {DType::i32});
    check::same_device(op, "expert_map", expert_map, p.device);
    if (expert_map.rank != 1 || !expert_map.is_contiguous()) {
      throw_arg_error(op, "expert_map", "a contiguous int32 [E]", expert_map.describe());
    }
    p.experts = expert_map.size(0);
    p.expert_map = static_cast<const int32_t*>(expert_map.data);
  }
  p.x = check::rows_of(op, "x", x);
  p.out = check::like(op, "out", out, x);
  p.weights = check::rows_of(op, "topk_weights", topk_weights);
  p.ids = check::rows_of(op, "topk_ids", topk_ids);
  p.w13 = w13.data;
  p.w2 = w2.data;
  p.bad_ids = check::counter(op, "bad_ids", bad_ids, p.device);
  if (p.device.is_cuda()) {  // ids and map values are on the device: the kernels count bad ones
    run_on_backend(
        p, "ref::fused_moe", [] {}, [&] { return cuda::fused_moe(p, stream); });
    return;
  }
  // Host data: every id and map value checked before the reference reads through them.
  for (int64_t t = 0; t < p.tokens; ++t) {
    for (int64_t j = 0; j < p.k; ++j) {
      const int32_t id = static_cast<const int32_t*>(p.ids.data)[t * p.ids.row_stride + j];
      if (id < 0 || id >= p.experts) {
        throw_arg_error(op, "topk_ids", "ids in [0, " + std::to_string(p.experts) + ")",
                        "topk_ids[" + std::to_string(t) + "][" + std::to_string(j) +
                            "] = " + std::to_string(id));
      }
    }
  }
  for (int64_t e = 0; p.expert_map && e < p.experts; ++e) {
    if (p.expert_map[e] < -1 || p.expert_map[e] >= p.local_experts) {
      throw_arg_error(op, "expert_map", "values in [-1, " + std::to_string(p.local_experts) + ")",
                      "expert_map[" + std::to_string(e) + "] = " + std::to_string(p.expert_map[e]));
    }
  }
  run_on_backend(
      p, "ref::fused_moe", [&] { ref::fused_moe(p); }, [] { return std::string(); });
}

}  // namespace kiln
