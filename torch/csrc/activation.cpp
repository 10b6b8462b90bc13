// torch.ops.kiln.* for the activation family (include/kiln/ops/activation.h): schemas, and CPU
// and CUDA impls that both call the kiln entry points. Outputs are fresh contiguous tensors.
// Fake impls and autograd are registered in Python: torch/kiln/_ops/activation.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "kiln/ops/activation.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

// torch's names for the two GELU forms (F.gelu's `approximate`): "none" (erf) or "tanh".
GeluApprox gelu_approx(std::string_view op, c10::string_view approximate) {
  if (approximate == "none") return GeluApprox::erf;
  if (approximate == "tanh") return GeluApprox::tanh;
  throw_arg_error(op, "approximate", "\"none\" or \"tanh\"",
                  "\"" + std::string(approximate.data(), approximate.size()) + "\"");
}

at::Tensor empty_like(const at::Tensor& t) {
  return at::empty(t.sizes(), t.options());
}

// [..., 2N] -> [..., N]: the output shape of a packed gated op (kiln checks the last dim).
at::Tensor empty_half(const at::Tensor& packed) {
  std::vector<int64_t> sizes(packed.sizes().begin(), packed.sizes().end());
  if (!sizes.empty()) sizes.back() /= 2;
  return at::empty(sizes, packed.options());
}

at::Tensor relu2_op(const at::Tensor& x) {
  return translate_errors([&] {
    const DeviceScope scope(x);
    at::Tensor y = empty_like(x);
    kiln::relu2(to_view("relu2", "y", y), to_view("relu2", "x", x), scope.stream());
    return y;
  });
}

at::Tensor relu2_backward_op(const at::Tensor& dy, const at::Tensor& x) {
  return translate_errors([&] {
    constexpr std::string_view op = "relu2_backward";
    const DeviceScope scope(x);
    at::Tensor dx = empty_like(x);
    kiln::relu2_backward(to_view(op, "dx", dx), to_view(op, "dy", dy), to_view(op, "x", x),
                         scope.stream());
    return dx;
  });
}

at::Tensor swiglu_op(const at::Tensor& gate, const at::Tensor& up) {
  return translate_errors([&] {
    constexpr std::string_view op = "swiglu";
    const DeviceScope scope(gate);
    at::Tensor y = empty_like(gate);
    kiln::swiglu(to_view(op, "y", y), to_view(op, "gate", gate), to_view(op, "up", up),
                 scope.stream());
    return y;
  });
}

std::tuple<at::Tensor, at::Tensor> swiglu_backward_op(const at::Tensor& dy, const at::Tensor& gate,
                                                      const at::Tensor& up) {
  return translate_errors([&] {
    constexpr std::string_view op = "swiglu_backward";
    const DeviceScope scope(gate);
    at::Tensor dgate = empty_like(gate), dup = empty_like(gate);
    kiln::swiglu_backward(to_view(op, "dgate", dgate), to_view(op, "dup", dup),
                          to_view(op, "dy", dy), to_view(op, "gate", gate), to_view(op, "up", up),
                          scope.stream());
    return std::make_tuple(dgate, dup);
  });
}

at::Tensor swiglu_packed_op(const at::Tensor& gate_up) {
  return translate_errors([&] {
    constexpr std::string_view op = "swiglu";
    const DeviceScope scope(gate_up);
    at::Tensor y = empty_half(gate_up);
    kiln::swiglu(to_view(op, "y", y), to_view(op, "gate_up", gate_up), scope.stream());
    return y;
  });
}

at::Tensor swiglu_packed_backward_op(const at::Tensor& dy, const at::Tensor& gate_up) {
  return translate_errors([&] {
    constexpr std::string_view op = "swiglu_backward";
    const DeviceScope scope(gate_up);
    at::Tensor dgate_up = empty_like(gate_up);
    kiln::swiglu_backward(to_view(op, "dgate_up", dgate_up), to_view(op, "dy", dy),
                          to_view(op, "gate_up", gate_up), scope.stream());
    return dgate_up;
  });
}

at::Tensor gelu_residual_op(const at::Tensor& h, const at::Tensor& g,
                            c10::string_view approximate) {
  return translate_errors([&] {
    constexpr std::string_view op = "gelu_residual";
    const DeviceScope scope(h);
    at::Tensor y = empty_like(h);
    kiln::gelu_residual(to_view(op, "y", y), to_view(op, "h", h), to_view(op, "g", g),
                        gelu_approx(op, approximate), scope.stream());
    return y;
  });
}

std::tuple<at::Tensor, at::Tensor> gelu_residual_backward_op(const at::Tensor& dy,
                                                             const at::Tensor& h,
                                                             const at::Tensor& g,
                                                             c10::string_view approximate) {
  return translate_errors([&] {
    constexpr std::string_view op = "gelu_residual_backward";
    const DeviceScope scope(h);
    at::Tensor dh = empty_like(h), dg = empty_like(h);
    kiln::gelu_residual_backward(to_view(op, "dh", dh), to_view(op, "dg", dg),
                                 to_view(op, "dy", dy), to_view(op, "h", h), to_view(op, "g", g),
                                 gelu_approx(op, approximate), scope.stream());
    return std::make_tuple(dh, dg);
  });
}

at::Tensor gelu_residual_packed_op(const at::Tensor& hg, c10::string_view approximate) {
  return translate_errors([&] {
    constexpr std::string_view op = "gelu_residual";
    const DeviceScope scope(hg);
    at::Tensor y = empty_half(hg);
    kiln::gelu_residual(to_view(op, "y", y), to_view(op, "hg", hg), gelu_approx(op, approximate),
                        scope.stream());
    return y;
  });
}

at::Tensor gelu_residual_packed_backward_op(const at::Tensor& dy, const at::Tensor& hg,
                                            c10::string_view approximate) {
  return translate_errors([&] {
    constexpr std::string_view op = "gelu_residual_backward";
    const DeviceScope scope(hg);
    at::Tensor dhg = empty_like(hg);
    kiln::gelu_residual_backward(to_view(op, "dhg", dhg), to_view(op, "dy", dy),
                                 to_view(op, "hg", hg), gelu_approx(op, approximate),
                                 scope.stream());
    return dhg;
  });
}

// The same impls serve CPU and CUDA: the kiln entry points pick the backend from the device.
void impl_activation_ops(torch::Library& m) {
  m.impl("relu2", &relu2_op);
  m.impl("relu2_backward", &relu2_backward_op);
  m.impl("swiglu", &swiglu_op);
  m.impl("swiglu_backward", &swiglu_backward_op);
  m.impl("swiglu_packed", &swiglu_packed_op);
  m.impl("swiglu_packed_backward", &swiglu_packed_backward_op);
  m.impl("gelu_residual", &gelu_residual_op);
  m.impl("gelu_residual_backward", &gelu_residual_backward_op);
  m.impl("gelu_residual_packed", &gelu_residual_packed_op);
  m.impl("gelu_residual_packed_backward", &gelu_residual_packed_backward_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.activation");
  // y = relu(x)^2.
  m.def("relu2(Tensor x) -> Tensor");
  m.def("relu2_backward(Tensor dy, Tensor x) -> Tensor");
  // y = silu(gate) * up; the packed form takes gate_up [..., 2N] = gate | up.
  m.def("swiglu(Tensor gate, Tensor up) -> Tensor");
  m.def("swiglu_backward(Tensor dy, Tensor gate, Tensor up) -> (Tensor, Tensor)");
  m.def("swiglu_packed(Tensor gate_up) -> Tensor");
  m.def("swiglu_packed_backward(Tensor dy, Tensor gate_up) -> Tensor");
  // y = GELU(h) * (g + 1); approximate as F.gelu's: "none" (erf) or "tanh"; packed hg = h | g.
  m.def("gelu_residual(Tensor h, Tensor g, str approximate) -> Tensor");
  m.def(
      "gelu_residual_backward(Tensor dy, Tensor h, Tensor g, str approximate) -> (Tensor, Tensor)");
  m.def("gelu_residual_packed(Tensor hg, str approximate) -> Tensor");
  m.def("gelu_residual_packed_backward(Tensor dy, Tensor hg, str approximate) -> Tensor");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_activation_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_activation_ops(m);
}
#endif
