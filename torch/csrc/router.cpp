// torch.ops.kiln.router, dense_router and hash_router (include/kiln/ops/router.h): schemas, and CPU
// and CUDA impls over the kiln entry points. Fake impls: torch/kiln/_ops/router.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "bad_count.h"
#include "kiln/ops/router.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

using OptTensor = std::optional<at::Tensor>;

RouterKind kind_of(const std::string& name) {
  if (name == "softmax") return RouterKind::softmax;
  if (name == "deepseek_v3") return RouterKind::deepseek_v3;
  if (name == "activation") return RouterKind::activation;
  throw_arg_error("router", "kind", "one of softmax, deepseek_v3, activation", name);
}

RouterConfig config_of(std::string_view op, const std::string& kind, int64_t k, bool renormalize,
                       const OptTensor& bias, int64_t n_group, int64_t topk_group,
                       double routed_scaling_factor) {
  RouterConfig c;
  c.kind = kind_of(kind);
  c.k = k;
  c.renormalize = renormalize;
  c.bias = to_view(op, "bias", bias);
  c.n_group = n_group;
  c.topk_group = topk_group;
  c.routed_scaling_factor = routed_scaling_factor;
  return c;
}

std::tuple<at::Tensor, at::Tensor> router_op(const at::Tensor& logits, const std::string& kind,
                                             int64_t k, bool renormalize, const OptTensor& bias,
                                             int64_t n_group, int64_t topk_group,
                                             double routed_scaling_factor) {
  return translate_errors([&] {
    constexpr std::string_view op = "router";
    const DeviceScope scope(logits);
    const int64_t rows = logits.dim() == 2 ? logits.size(0) : 0, kk = k > 0 ? k : 0;
    at::Tensor weights = at::empty({rows, kk}, logits.options().dtype(at::kFloat));
    at::Tensor ids = at::empty({rows, kk}, logits.options().dtype(at::kInt));
    const RouterConfig c =
        config_of(op, kind, k, renormalize, bias, n_group, topk_group, routed_scaling_factor);
    kiln::router(to_view(op, "weights", weights), to_view(op, "ids", ids),
                 to_view(op, "logits", logits), c, scope.stream());
    return std::make_tuple(weights, ids);
  });
}

// (weights, ids, logits f32 [T, E]) from x [T, H] and gate [E, H]; the scratch is a torch byte
// tensor on x's device (the caching allocator: no sync, capture-safe).
std::tuple<at::Tensor, at::Tensor, at::Tensor> dense_router_op(
    const at::Tensor& x, const at::Tensor& gate, const std::string& kind, int64_t k,
    bool renormalize, const OptTensor& bias, int64_t n_group, int64_t topk_group,
    double routed_scaling_factor) {
  return translate_errors([&] {
    constexpr std::string_view op = "dense_router";
    const DeviceScope scope(x);
    const int64_t rows = x.dim() == 2 ? x.size(0) : 0, kk = k > 0 ? k : 0;
    const int64_t experts = gate.dim() == 2 ? gate.size(0) : 0;
    const int64_t hidden = x.dim() == 2 ? x.size(1) : 0;
    at::Tensor weights = at::empty({rows, kk}, x.options().dtype(at::kFloat));
    at::Tensor ids = at::empty({rows, kk}, x.options().dtype(at::kInt));
    at::Tensor logits = at::empty({rows, experts}, x.options().dtype(at::kFloat));
    const TensorView xv = to_view(op, "x", x);
    const size_t bytes = dense_router_workspace_size(rows, experts, hidden, xv.device);
    at::Tensor scratch = at::empty({static_cast<int64_t>(bytes)}, x.options().dtype(at::kByte));
    const RouterConfig c =
        config_of(op, kind, k, renormalize, bias, n_group, topk_group, routed_scaling_factor);
    kiln::dense_router(to_view(op, "weights", weights), to_view(op, "ids", ids),
                       to_view(op, "logits_out", logits), xv, to_view(op, "gate", gate), c,
                       Workspace{scratch.data_ptr(), bytes}, scope.stream());
    return std::make_tuple(weights, ids, logits);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hash_router_op(const at::Tensor& token_ids,
                                                              const at::Tensor& table,
                                                              bool count_bad) {
  return translate_errors([&] {
    constexpr std::string_view op = "hash_router";
    const DeviceScope scope(token_ids);
    const int64_t rows = token_ids.dim() == 1 ? token_ids.size(0) : 0;
    const int64_t k = table.dim() == 2 ? table.size(1) : 0;
    at::Tensor weights = at::empty({rows, k}, token_ids.options().dtype(at::kFloat));
    at::Tensor ids = at::empty({rows, k}, token_ids.options().dtype(at::kInt));
    at::Tensor bad = bad_count(token_ids, count_bad);
    kiln::hash_router(to_view(op, "weights", weights), to_view(op, "ids", ids),
                      to_view(op, "token_ids", token_ids), to_view(op, "table", table),
                      bad_count_view(op, "bad_token_ids", bad), scope.stream());
    return std::make_tuple(weights, ids, bad);
  });
}

void impl_router_ops(torch::Library& m) {
  m.impl("router", &router_op);
  m.impl("hash_router", &hash_router_op);
  m.impl("dense_router", &dense_router_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.router");
  // (weights f32 [T, k], ids int32 [T, k]) from logits [T, E].
  m.def(
      "router(Tensor logits, str kind, int k, bool renormalize, Tensor? bias, int n_group, int "
      "topk_group, float routed_scaling_factor) -> (Tensor, Tensor)");
  // (weights f32 [T, k], ids int32 [T, k], logits f32 [T, E]) from x [T, H] and gate [E, H].
  m.def(
      "dense_router(Tensor x, Tensor gate, str kind, int k, bool renormalize, Tensor? bias, int "
      "n_group, int topk_group, float routed_scaling_factor) -> (Tensor, Tensor, Tensor)");
  // (weights, ids, bad token id count int32 [1]; count_bad=False: not counted, int32 [0]).
  m.def(
      "hash_router(Tensor token_ids, Tensor table, bool count_bad=True) -> (Tensor, Tensor, "
      "Tensor)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_router_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_router_ops(m);
}
#endif
