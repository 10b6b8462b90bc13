// torch.ops.kiln.* for the normalization family (include/kiln/ops/norm.h): schemas, and CPU and
// CUDA impls that both call the kiln entry points (CPU tensors run the float64 reference, CUDA
// tensors the kernels on the current stream). Outputs are fresh contiguous tensors of x's shape
// and dtype; dweight/dbias take weight's/bias's dtype. Fake impls and autograd formulas are
// registered in Python: torch/kiln/_ops/norm.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

using OptTensor = std::optional<at::Tensor>;

at::Tensor empty_like_x(const at::Tensor& x) {
  return at::empty(x.sizes(), x.options());
}

// dweight/dbias: like their parameter, when asked for. Asking without the parameter is an error
// (there is nothing to differentiate).
OptTensor param_grad(std::string_view op, std::string_view flag, bool needed,
                     const OptTensor& param, std::string_view param_name) {
  if (!needed) return std::nullopt;
  if (!param.has_value() || !param->defined()) {
    throw_arg_error(op, flag, "false when " + std::string(param_name) + " is None", "true");
  }
  return at::empty(param->sizes(), param->options());
}

// Scratch for the dweight/dbias partial sums; only allocated when a parameter gradient is
// computed (the kiln op reads it only then). Kept alive by the caller until the op is enqueued;
// the caching allocator orders its reuse on the stream.
Workspace backward_workspace(const TensorView& x, const at::Tensor& x_tensor, bool needed,
                             at::Tensor& storage) {
  if (!needed) return {};
  const size_t bytes = kiln::norm_backward_workspace_size(x);
  if (bytes == 0) return {};
  storage = at::empty({static_cast<int64_t>(bytes)}, x_tensor.options().dtype(at::kByte));
  return {storage.data_ptr(), bytes};
}

at::Tensor rms_norm_op(const at::Tensor& x, const OptTensor& weight, double eps) {
  return translate_errors([&] {
    constexpr std::string_view op = "rms_norm";
    const DeviceScope scope(x);
    const TensorView xv = to_view(op, "x", x);
    const TensorView wv = to_view(op, "weight", weight);
    at::Tensor y = empty_like_x(x);
    kiln::rms_norm(to_view(op, "y", y), xv, wv, eps, scope.stream());
    return y;
  });
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_op(const at::Tensor& x, const at::Tensor& residual,
                                                   const OptTensor& weight, double eps) {
  return translate_errors([&] {
    constexpr std::string_view op = "add_rms_norm";
    const DeviceScope scope(x);
    const TensorView xv = to_view(op, "x", x);
    const TensorView rv = to_view(op, "residual", residual);
    const TensorView wv = to_view(op, "weight", weight);
    at::Tensor y = empty_like_x(x);
    at::Tensor residual_out = empty_like_x(x);
    kiln::add_rms_norm(to_view(op, "y", y), to_view(op, "residual_out", residual_out), xv, rv, wv,
                       eps, scope.stream());
    return std::make_tuple(y, residual_out);
  });
}

at::Tensor layer_norm_op(const at::Tensor& x, const OptTensor& weight, const OptTensor& bias,
                         double eps) {
  return translate_errors([&] {
    constexpr std::string_view op = "layer_norm";
    const DeviceScope scope(x);
    const TensorView xv = to_view(op, "x", x);
    const TensorView wv = to_view(op, "weight", weight);
    const TensorView bv = to_view(op, "bias", bias);
    at::Tensor y = empty_like_x(x);
    kiln::layer_norm(to_view(op, "y", y), xv, wv, bv, eps, scope.stream());
    return y;
  });
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm_op(const at::Tensor& x,
                                                     const at::Tensor& residual,
                                                     const OptTensor& weight, const OptTensor& bias,
                                                     double eps) {
  return translate_errors([&] {
    constexpr std::string_view op = "add_layer_norm";
    const DeviceScope scope(x);
    const TensorView xv = to_view(op, "x", x);
    const TensorView rv = to_view(op, "residual", residual);
    const TensorView wv = to_view(op, "weight", weight);
    const TensorView bv = to_view(op, "bias", bias);
    at::Tensor y = empty_like_x(x);
    at::Tensor residual_out = empty_like_x(x);
    kiln::add_layer_norm(to_view(op, "y", y), to_view(op, "residual_out", residual_out), xv, rv, wv,
                         bv, eps, scope.stream());
    return std::make_tuple(y, residual_out);
  });
}

std::tuple<at::Tensor, OptTensor> rms_norm_backward_op(const at::Tensor& dy, const at::Tensor& x,
                                                       const OptTensor& weight, double eps,
                                                       const OptTensor& dresidual,
                                                       bool need_dweight) {
  return translate_errors([&] {
    constexpr std::string_view op = "rms_norm_backward";
    const DeviceScope scope(x);
    const TensorView dyv = to_view(op, "dy", dy);
    const TensorView xv = to_view(op, "x", x);
    const TensorView wv = to_view(op, "weight", weight);
    const TensorView drv = to_view(op, "dresidual", dresidual);
    at::Tensor dx = empty_like_x(x);
    OptTensor dweight = param_grad(op, "need_dweight", need_dweight, weight, "weight");
    at::Tensor workspace;
    const Workspace ws = backward_workspace(xv, x, need_dweight, workspace);
    kiln::rms_norm_backward(to_view(op, "dx", dx), to_view(op, "dweight", dweight), dyv, xv, wv,
                            eps, drv, ws, scope.stream());
    return std::make_tuple(dx, dweight);
  });
}

std::tuple<at::Tensor, OptTensor, OptTensor> layer_norm_backward_op(
    const at::Tensor& dy, const at::Tensor& x, const OptTensor& weight, const OptTensor& bias,
    double eps, const OptTensor& dresidual, bool need_dweight, bool need_dbias) {
  return translate_errors([&] {
    constexpr std::string_view op = "layer_norm_backward";
    const DeviceScope scope(x);
    const TensorView dyv = to_view(op, "dy", dy);
    const TensorView xv = to_view(op, "x", x);
    const TensorView wv = to_view(op, "weight", weight);
    to_view(op, "bias", bias);  // only its dtype and device matter (dbias is made like it)
    const TensorView drv = to_view(op, "dresidual", dresidual);
    at::Tensor dx = empty_like_x(x);
    OptTensor dweight = param_grad(op, "need_dweight", need_dweight, weight, "weight");
    OptTensor dbias = param_grad(op, "need_dbias", need_dbias, bias, "bias");
    at::Tensor workspace;
    const Workspace ws = backward_workspace(xv, x, need_dweight || need_dbias, workspace);
    kiln::layer_norm_backward(to_view(op, "dx", dx), to_view(op, "dweight", dweight),
                              to_view(op, "dbias", dbias), dyv, xv, wv, eps, drv, ws,
                              scope.stream());
    return std::make_tuple(dx, dweight, dbias);
  });
}

// The same impls serve CPU and CUDA: the kiln entry points pick the backend from the device.
void impl_norm_ops(torch::Library& m) {
  m.impl("rms_norm", &rms_norm_op);
  m.impl("add_rms_norm", &add_rms_norm_op);
  m.impl("layer_norm", &layer_norm_op);
  m.impl("add_layer_norm", &add_layer_norm_op);
  m.impl("rms_norm_backward", &rms_norm_backward_op);
  m.impl("layer_norm_backward", &layer_norm_backward_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.norm");
  // y = x / sqrt(mean(x^2) + eps) * weight over the last dim; x [..., N], weight [N] or None.
  m.def("rms_norm(Tensor x, Tensor? weight, float eps) -> Tensor");
  // (y, residual_out): residual_out = x + residual, y = rms_norm(residual_out, weight, eps).
  m.def("add_rms_norm(Tensor x, Tensor residual, Tensor? weight, float eps) -> (Tensor, Tensor)");
  // y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias over the last dim.
  m.def("layer_norm(Tensor x, Tensor? weight, Tensor? bias, float eps) -> Tensor");
  // (y, residual_out): residual_out = x + residual, y = layer_norm(residual_out, ...).
  m.def(
      "add_layer_norm(Tensor x, Tensor residual, Tensor? weight, Tensor? bias, float eps) -> "
      "(Tensor, Tensor)");
  // (dx, dweight): dx = d rms_norm(x)/dx . dy + dresidual; dweight only if need_dweight, else None.
  m.def(
      "rms_norm_backward(Tensor dy, Tensor x, Tensor? weight, float eps, Tensor? dresidual, "
      "bool need_dweight) -> (Tensor, Tensor?)");
  // (dx, dweight, dbias) of layer_norm, as above; bias gives only dbias's dtype (dbias = sum dy).
  m.def(
      "layer_norm_backward(Tensor dy, Tensor x, Tensor? weight, Tensor? bias, float eps, "
      "Tensor? dresidual, bool need_dweight, bool need_dbias) -> (Tensor, Tensor?, Tensor?)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_norm_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_norm_ops(m);
}
#endif
