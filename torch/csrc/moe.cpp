// torch.ops.kiln.fused_moe (include/kiln/ops/moe.h): schema, and CPU and CUDA impls over the kiln
// entry point (on CUDA, src/cuda/moe/fused_moe.cu's GEMV kernels or the grouped path). Fake impl:
// torch/kiln/_ops/moe.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "kiln/ops/moe.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

using OptTensor = std::optional<at::Tensor>;

MoeActivation activation_of(const std::string& name) {
  if (name == "swiglu") return MoeActivation::swiglu;
  if (name == "gelu_tanh") return MoeActivation::gelu_tanh;
  if (name == "gelu_erf") return MoeActivation::gelu_erf;
  if (name == "relu2") return MoeActivation::relu2;
  throw_arg_error("fused_moe", "activation", "one of swiglu, gelu_tanh, gelu_erf, relu2", name);
}

std::tuple<at::Tensor, at::Tensor> fused_moe_op(
    const at::Tensor& x, const at::Tensor& w13, const at::Tensor& w2,
    const at::Tensor& topk_weights, const at::Tensor& topk_ids, const std::string& activation,
    const OptTensor& expert_map, const OptTensor& w13_scale, const OptTensor& w2_scale,
    bool fp8_activations) {
  return translate_errors([&] {
    constexpr std::string_view op = "fused_moe";
    const DeviceScope scope(x);
    at::Tensor out = at::empty(x.sizes(), x.options());
    at::Tensor bad = at::zeros({1}, x.options().dtype(at::kInt));
    kiln::fused_moe(to_view(op, "out", out), to_view(op, "x", x), to_view(op, "w13", w13),
                    to_view(op, "w2", w2), to_view(op, "topk_weights", topk_weights),
                    to_view(op, "topk_ids", topk_ids), activation_of(activation),
                    to_view(op, "expert_map", expert_map), to_view(op, "bad_ids", bad),
                    MoeWeightScales{to_view(op, "w13_scale", w13_scale),
                                    to_view(op, "w2_scale", w2_scale), fp8_activations},
                    scope.stream());
    return std::make_tuple(out, bad);
  });
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.moe");
  // (out [T, H] = sum over each token's picks of weight * w2[e] act(w13[e] x[t]), the count of
  // picks skipped for bad ids or map values: int32 [1]). FP8 (e4m3) w13/w2 take their 128 x 128
  // block scales; fp8_activations = true quantizes x and the intermediate too (w8a8).
  m.def(
      "fused_moe(Tensor x, Tensor w13, Tensor w2, Tensor topk_weights, Tensor topk_ids, str "
      "activation, Tensor? expert_map, Tensor? w13_scale=None, Tensor? w2_scale=None, bool "
      "fp8_activations=False) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  m.impl("fused_moe", &kiln::torch_binding::fused_moe_op);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  m.impl("fused_moe", &kiln::torch_binding::fused_moe_op);
}
#endif
