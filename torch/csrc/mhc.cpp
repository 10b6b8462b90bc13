// torch.ops.kiln.sinkhorn_knopp and its backward (include/kiln/ops/mhc.h): schemas, and CPU and
// CUDA impls over the kiln entry points. Fake impls and autograd: torch/kiln/_ops/mhc.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "kiln/ops/mhc.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

at::Tensor sinkhorn_knopp_op(const at::Tensor& logits, int64_t iters, double eps) {
  return translate_errors([&] {
    constexpr std::string_view op = "sinkhorn_knopp";
    const DeviceScope scope(logits);
    at::Tensor out = at::empty(logits.sizes(), logits.options());
    kiln::sinkhorn_knopp(to_view(op, "out", out), to_view(op, "logits", logits),
                         static_cast<int>(iters), eps, scope.stream());
    return out;
  });
}

at::Tensor sinkhorn_knopp_backward_op(const at::Tensor& dout, const at::Tensor& logits,
                                      int64_t iters, double eps) {
  return translate_errors([&] {
    constexpr std::string_view op = "sinkhorn_knopp_backward";
    const DeviceScope scope(logits);
    at::Tensor dlogits = at::empty(logits.sizes(), logits.options());
    kiln::sinkhorn_knopp_backward(to_view(op, "dlogits", dlogits), to_view(op, "dout", dout),
                                  to_view(op, "logits", logits), static_cast<int>(iters), eps,
                                  scope.stream());
    return dlogits;
  });
}

void impl_mhc_ops(torch::Library& m) {
  m.impl("sinkhorn_knopp", &sinkhorn_knopp_op);
  m.impl("sinkhorn_knopp_backward", &sinkhorn_knopp_backward_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.mhc");
  // The doubly stochastic projection of exp(logits) [B, n, n]: iters row/column normalisations.
  m.def("sinkhorn_knopp(Tensor logits, int iters, float eps) -> Tensor");
  m.def("sinkhorn_knopp_backward(Tensor dout, Tensor logits, int iters, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_mhc_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_mhc_ops(m);
}
#endif
