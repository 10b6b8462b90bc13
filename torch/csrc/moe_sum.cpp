// torch.ops.kiln.moe_sum and its backward (include/kiln/ops/moe_sum.h): schemas, and CPU and
// CUDA impls over the kiln entry points. Fake impls and autograd: torch/kiln/_ops/moe_sum.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kiln/ops/moe_sum.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

using OptTensor = std::optional<at::Tensor>;

at::Tensor moe_sum_op(const at::Tensor& x, const OptTensor& weights) {
  return translate_errors([&] {
    constexpr std::string_view op = "moe_sum";
    const DeviceScope scope(x);
    // kiln checks x (rank 3) before out, so a wrong-rank x gets kiln's message, not out's.
    const bool rank3 = x.dim() == 3;
    at::Tensor out = at::empty({rank3 ? x.size(0) : 0, rank3 ? x.size(2) : 0}, x.options());
    kiln::moe_sum(to_view(op, "out", out), to_view(op, "x", x), to_view(op, "weights", weights),
                  scope.stream());
    return out;
  });
}

std::tuple<at::Tensor, OptTensor> moe_sum_backward_op(const at::Tensor& dout, const at::Tensor& x,
                                                      const OptTensor& weights,
                                                      bool need_dweights) {
  return translate_errors([&] {
    constexpr std::string_view op = "moe_sum_backward";
    const DeviceScope scope(x);
    at::Tensor dx = at::empty(x.sizes(), x.options());
    OptTensor dweights;
    if (need_dweights && weights.has_value() && weights->defined()) {
      dweights = at::empty(weights->sizes(), weights->options());
    }
    kiln::moe_sum_backward(to_view(op, "dx", dx), to_view(op, "dweights", dweights),
                           to_view(op, "dout", dout), to_view(op, "x", x),
                           to_view(op, "weights", weights), scope.stream());
    return std::make_tuple(dx, dweights);
  });
}

void impl_moe_sum_ops(torch::Library& m) {
  m.impl("moe_sum", &moe_sum_op);
  m.impl("moe_sum_backward", &moe_sum_backward_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.moe_sum");
  // out [T, N] = sum_j weights[t, j] * x[t, j, :]; x [T, k, N], weights [T, k] or None.
  m.def("moe_sum(Tensor x, Tensor? weights) -> Tensor");
  // (dx, dweights): dx = weights * dout per expert; dweights = <dout, x> when need_dweights.
  m.def(
      "moe_sum_backward(Tensor dout, Tensor x, Tensor? weights, bool need_dweights) -> "
      "(Tensor, Tensor?)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_moe_sum_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_moe_sum_ops(m);
}
#endif
