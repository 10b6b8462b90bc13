// torch.ops.kiln.tau_tail (include/kiln/ops/tau_tail.h): in place on qkv; returns a fresh int32
// [1] count of out-of-range positions (the kernel's report; the op never synchronises), or with
// count_bad=False an empty int32 [0] (not counted, no fill kernel: bad_count.h). Fake impl:
// torch/kiln/_ops/tau_tail.py.
#include <torch/library.h>

#include "bad_count.h"
#include "kiln/ops/tau_tail.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

at::Tensor tau_tail_op(at::Tensor& qkv, const at::Tensor& tok_qv_lin,
                       const at::Tensor& tau_pos_table, const at::Tensor& positions, int64_t heads,
                       bool count_bad) {
  return translate_errors([&] {
    constexpr std::string_view op = "tau_tail";
    const DeviceScope scope(qkv);
    at::Tensor bad = bad_count(qkv, count_bad);
    kiln::tau_tail(to_view(op, "qkv", qkv), to_view(op, "tok_qv_lin", tok_qv_lin),
                   to_view(op, "tau_pos_table", tau_pos_table), to_view(op, "positions", positions),
                   heads, bad_count_view(op, "bad_positions", bad), scope.stream());
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
      "int heads, bool count_bad=True) -> Tensor");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  m.impl("tau_tail", &kiln::torch_binding::tau_tail_op);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  m.impl("tau_tail", &kiln::torch_binding::tau_tail_op);
}
#endif
