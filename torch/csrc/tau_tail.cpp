// torch.ops.kiln.tau_tail (include/kiln/ops/tau_tail.h): in place on qkv; returns a fresh int32
// [1] count of out-of-range positions (the kernel's report; the op never synchronises). Fake impl:
// torch/kiln/_ops/tau_tail.py.
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "kiln/ops/tau_tail.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

at::Tensor tau_tail_op(at::Tensor& qkv, const at::Tensor& tok_qv_lin,
                       const at::Tensor& tau_pos_table, const at::Tensor& positions,
                       int64_t heads) {
  return translate_errors([&] {
    constexpr std::string_view op = "tau_tail";
    const DeviceScope scope(qkv);
    at::Tensor bad = at::zeros({1}, qkv.options().dtype(at::kInt));
    kiln::tau_tail(to_view(op, "qkv", qkv), to_view(op, "tok_qv_lin", tok_qv_lin),
                   to_view(op, "tau_pos_table", tau_pos_table), to_view(op, "positions", positions),
                   heads, to_view(op, "bad_positions", bad), scope.stream());
    return bad;
  });
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.tau_tail");
  // In place: q, v of qkv [T, 3 H D] scaled per head by tanh(tok) + tau[pos, h]; returns the
  // count of out-of-range positions (int32 [1]).
  m.def(
      "tau_tail(Tensor(a!) qkv, Tensor tok_qv_lin, Tensor tau_pos_table, Tensor positions, "
      "int heads) -> Tensor");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  m.impl("tau_tail", &kiln::torch_binding::tau_tail_op);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  m.impl("tau_tail", &kiln::torch_binding::tau_tail_op);
}
#endif
