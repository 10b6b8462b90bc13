// torch.ops.kiln.sinkhorn_knopp, mhc_pre_mix, mhc_post_mix and their backwards
// (include/kiln/ops/mhc.h): schemas, and CPU and CUDA impls over the kiln entry points. Fake impls
// and autograd: torch/kiln/_ops/mhc.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

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

at::Tensor mhc_pre_mix_op(const at::Tensor& x, const at::Tensor& h_pre) {
  return translate_errors([&] {
    constexpr std::string_view op = "mhc_pre_mix";
    const DeviceScope scope(x);
    // kiln checks x (rank 3) before h, so a wrong-rank x gets kiln's message, not h's.
    const bool rank3 = x.dim() == 3;
    at::Tensor h = at::empty({rank3 ? x.size(0) : 0, rank3 ? x.size(2) : 0}, x.options());
    kiln::mhc_pre_mix(to_view(op, "h", h), to_view(op, "x", x), to_view(op, "h_pre", h_pre),
                      scope.stream());
    return h;
  });
}

std::tuple<at::Tensor, std::optional<at::Tensor>> mhc_pre_mix_backward_op(const at::Tensor& dh,
                                                                          const at::Tensor& x,
                                                                          const at::Tensor& h_pre,
                                                                          bool need_dh_pre) {
  return translate_errors([&] {
    constexpr std::string_view op = "mhc_pre_mix_backward";
    const DeviceScope scope(x);
    at::Tensor dx = at::empty(x.sizes(), x.options());
    std::optional<at::Tensor> dh_pre;
    if (need_dh_pre) dh_pre = at::empty(h_pre.sizes(), h_pre.options());
    kiln::mhc_pre_mix_backward(to_view(op, "dx", dx), to_view(op, "dh_pre", dh_pre),
                               to_view(op, "dh", dh), to_view(op, "x", x),
                               to_view(op, "h_pre", h_pre), scope.stream());
    return std::make_tuple(dx, dh_pre);
  });
}

at::Tensor mhc_post_mix_op(const at::Tensor& x, const at::Tensor& y, const at::Tensor& h_res,
                           const at::Tensor& h_post) {
  return translate_errors([&] {
    constexpr std::string_view op = "mhc_post_mix";
    const DeviceScope scope(x);
    at::Tensor x_out = at::empty(x.sizes(), x.options());
    kiln::mhc_post_mix(to_view(op, "x_out", x_out), to_view(op, "x", x), to_view(op, "y", y),
                       to_view(op, "h_res", h_res), to_view(op, "h_post", h_post), scope.stream());
    return x_out;
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mhc_post_mix_backward_op(
    const at::Tensor& dx_out, const at::Tensor& x, const at::Tensor& y, const at::Tensor& h_res,
    const at::Tensor& h_post) {
  return translate_errors([&] {
    constexpr std::string_view op = "mhc_post_mix_backward";
    const DeviceScope scope(x);
    // Per-token dH's, contiguous even where H is an expanded view (autograd sums them over T).
    at::Tensor dx = at::empty(x.sizes(), x.options());
    at::Tensor dy = at::empty(y.sizes(), y.options());
    at::Tensor dh_res = at::empty(h_res.sizes(), h_res.options());
    at::Tensor dh_post = at::empty(h_post.sizes(), h_post.options());
    kiln::mhc_post_mix_backward(to_view(op, "dx", dx), to_view(op, "dy", dy),
                                to_view(op, "dh_res", dh_res), to_view(op, "dh_post", dh_post),
                                to_view(op, "dx_out", dx_out), to_view(op, "x", x),
                                to_view(op, "y", y), to_view(op, "h_res", h_res),
                                to_view(op, "h_post", h_post), scope.stream());
    return std::make_tuple(dx, dy, dh_res, dh_post);
  });
}

void impl_mhc_ops(torch::Library& m) {
  m.impl("sinkhorn_knopp", &sinkhorn_knopp_op);
  m.impl("sinkhorn_knopp_backward", &sinkhorn_knopp_backward_op);
  m.impl("mhc_pre_mix", &mhc_pre_mix_op);
  m.impl("mhc_pre_mix_backward", &mhc_pre_mix_backward_op);
  m.impl("mhc_post_mix", &mhc_post_mix_op);
  m.impl("mhc_post_mix_backward", &mhc_post_mix_backward_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.mhc");
  // The doubly stochastic projection of exp(logits) [B, n, n]: iters row/column normalisations.
  m.def("sinkhorn_knopp(Tensor logits, int iters, float eps) -> Tensor");
  m.def("sinkhorn_knopp_backward(Tensor dout, Tensor logits, int iters, float eps) -> Tensor");
  // h [T, C] = sum_i h_pre[t, i] * x[t, i, :]; x [T, n, C] (n <= 8), h_pre f32 [T, n].
  m.def("mhc_pre_mix(Tensor x, Tensor h_pre) -> Tensor");
  // (dx, dh_pre): dx = h_pre * dh per stream; dh_pre = <dh, x> (f32, per token) when asked.
  m.def(
      "mhc_pre_mix_backward(Tensor dh, Tensor x, Tensor h_pre, bool need_dh_pre) -> (Tensor, "
      "Tensor?)");
  // x_out [T, n, C] = h_res @ x + h_post^T y per token; h_res f32 [T, n, n], h_post f32 [T, n].
  m.def("mhc_post_mix(Tensor x, Tensor y, Tensor h_res, Tensor h_post) -> Tensor");
  // (dx, dy, dh_res, dh_post) from dx_out, in one pass; dh's f32 per token.
  m.def(
      "mhc_post_mix_backward(Tensor dx_out, Tensor x, Tensor y, Tensor h_res, Tensor h_post) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_mhc_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_mhc_ops(m);
}
#endif
