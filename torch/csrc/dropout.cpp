// torch.ops.kiln.bias_dropout_add and its backward (include/kiln/ops/dropout.h): schemas, and CPU
// and CUDA impls over the kiln entry points. seed and offset are torch ints (int64) whose bits are
// kiln's uint64 key and counter. Fake impls and autograd: torch/kiln/_ops/dropout.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kiln/ops/dropout.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

using OptTensor = std::optional<at::Tensor>;

at::Tensor bias_dropout_add_op(const at::Tensor& x, const OptTensor& bias,
                               const at::Tensor& residual, double p, int64_t seed, int64_t offset,
                               bool training) {
  return translate_errors([&] {
    constexpr std::string_view op = "bias_dropout_add";
    const DeviceScope scope(x);
    at::Tensor out = at::empty(x.sizes(), x.options());
    kiln::bias_dropout_add(to_view(op, "out", out), to_view(op, "x", x), to_view(op, "bias", bias),
                           to_view(op, "residual", residual), p, static_cast<uint64_t>(seed),
                           static_cast<uint64_t>(offset), training, scope.stream());
    return out;
  });
}

std::tuple<at::Tensor, OptTensor> bias_dropout_add_backward_op(const at::Tensor& dout, double p,
                                                               int64_t seed, int64_t offset,
                                                               bool training, bool need_dbias) {
  return translate_errors([&] {
    constexpr std::string_view op = "bias_dropout_add_backward";
    const DeviceScope scope(dout);
    at::Tensor dx = at::empty(dout.sizes(), dout.options());
    OptTensor dbias;
    if (need_dbias) dbias = at::empty({dout.dim() > 0 ? dout.size(-1) : 1}, dout.options());
    const TensorView dout_view = to_view(op, "dout", dout);
    // Scratch for dbias's partial sums, only when dbias is computed; the caching allocator orders
    // its reuse on the stream.
    at::Tensor storage;
    Workspace workspace;
    if (need_dbias) {
      const size_t bytes = kiln::bias_dropout_add_backward_workspace_size(dout_view);
      if (bytes > 0) {
        storage = at::empty({static_cast<int64_t>(bytes)}, dout.options().dtype(at::kByte));
        workspace = {storage.data_ptr(), bytes};
      }
    }
    kiln::bias_dropout_add_backward(to_view(op, "dx", dx), to_view(op, "dbias", dbias), dout_view,
                                    p, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset),
                                    training, workspace, scope.stream());
    return std::make_tuple(dx, dbias);
  });
}

void impl_dropout_ops(torch::Library& m) {
  m.impl("bias_dropout_add", &bias_dropout_add_op);
  m.impl("bias_dropout_add_backward", &bias_dropout_add_backward_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.dropout");
  // out = residual + dropout(x + bias); the mask from Philox keyed by (seed, offset, element).
  m.def(
      "bias_dropout_add(Tensor x, Tensor? bias, Tensor residual, float p, int seed, int offset, "
      "bool training) -> Tensor");
  // (dx, dbias): dx = dout * mask / (1 - p); dbias = column sums of dx when need_dbias.
  m.def(
      "bias_dropout_add_backward(Tensor dout, float p, int seed, int offset, bool training, "
      "bool need_dbias) -> (Tensor, Tensor?)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_dropout_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_dropout_ops(m);
}
#endif
