// torch.ops.kiln.topk (include/kiln/ops/topk.h): schema, and CPU and CUDA impls over the kiln
// entry point. Fake impl: torch/kiln/_ops/topk.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "kiln/ops/topk.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

std::tuple<at::Tensor, at::Tensor> topk_op(const at::Tensor& scores, int64_t k, bool softmax,
                                           bool f32_values) {
  return translate_errors([&] {
    constexpr std::string_view op = "topk";
    const DeviceScope scope(scores);
    const int64_t rows = scores.dim() == 2 ? scores.size(0) : 0;
    const int64_t kk = k > 0 ? k : 0;
    at::Tensor values = at::empty(
        {rows, kk}, scores.options().dtype(f32_values ? at::kFloat : scores.scalar_type()));
    at::Tensor indices = at::empty({rows, kk}, scores.options().dtype(at::kInt));
    kiln::topk(to_view(op, "values", values), to_view(op, "indices", indices),
               to_view(op, "scores", scores), k, softmax, scope.stream());
    return std::make_tuple(values, indices);
  });
}

void impl_topk_ops(torch::Library& m) {
  m.impl("topk", &topk_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.topk");
  // (values [T, k], indices int32 [T, k]): sorted descending, ties to the lower index.
  m.def("topk(Tensor scores, int k, bool softmax, bool f32_values) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_topk_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_topk_ops(m);
}
#endif
