// torch.ops.kiln.rope / rope_inplace / rope_backward (include/kiln/ops/rope.h): rope returns fresh
// contiguous q_out, k_out and an int32 [1] count of out-of-range positions (the kernel's report;
// the op never synchronises); rope_inplace rotates q and k where they are (strided views into a
// fused qkv buffer included) and returns the count. count_bad=False: an empty int32 [0] instead,
// and no zero-fill kernel for it; rope_backward never counts (the forward did). Fake impls and
// autograd: torch/kiln/_ops/rope.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "bad_count.h"
#include "kiln/ops/rope.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

RopeLayout layout_of(c10::string_view layout) {
  return rope_layout(std::string_view(layout.data(), layout.size()));
}

// out = R(sign theta) x for q and k, into fresh tensors (inverse: rope_backward).
std::tuple<at::Tensor, at::Tensor, at::Tensor> rotate(
    bool inverse, const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos_sin_cache,
    const at::Tensor& positions, c10::string_view layout, int64_t rotary_dim, bool count_bad) {
  const std::string_view op = inverse ? "rope_backward" : "rope";
  const DeviceScope scope(q);
  const RopeLayout l = layout_of(layout);
  // The inputs' views first, so a tensor kiln cannot take is named as the input, not the output.
  const TensorView vq = to_view(op, inverse ? "dq_out" : "q", q);
  const TensorView vk = to_view(op, inverse ? "dk_out" : "k", k);
  at::Tensor q_out = at::empty(q.sizes(), q.options()), k_out = at::empty(k.sizes(), k.options());
  at::Tensor bad = bad_count(q, count_bad);
  const TensorView vq_out = to_view(op, inverse ? "dq" : "q_out", q_out);
  const TensorView vk_out = to_view(op, inverse ? "dk" : "k_out", k_out);
  const auto f = inverse ? &kiln::rope_backward : &kiln::rope;
  f(vq_out, vk_out, vq, vk, to_view(op, "cos_sin_cache", cos_sin_cache),
    to_view(op, "positions", positions), l, rotary_dim, bad_count_view(op, "bad_positions", bad),
    scope.stream());
  return std::make_tuple(q_out, k_out, bad);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rope_op(const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& cos_sin_cache,
                                                       const at::Tensor& positions,
                                                       c10::string_view layout, int64_t rotary_dim,
                                                       bool count_bad) {
  return translate_errors(
      [&] { return rotate(false, q, k, cos_sin_cache, positions, layout, rotary_dim, count_bad); });
}

std::tuple<at::Tensor, at::Tensor> rope_backward_op(const at::Tensor& dq_out,
                                                    const at::Tensor& dk_out,
                                                    const at::Tensor& cos_sin_cache,
                                                    const at::Tensor& positions,
                                                    c10::string_view layout, int64_t rotary_dim) {
  return translate_errors([&] {
    auto [dq, dk, bad] =
        rotate(true, dq_out, dk_out, cos_sin_cache, positions, layout, rotary_dim, false);
    return std::make_tuple(dq, dk);
  });
}

at::Tensor rope_inplace_op(at::Tensor& q, at::Tensor& k, const at::Tensor& cos_sin_cache,
                           const at::Tensor& positions, c10::string_view layout, int64_t rotary_dim,
                           bool count_bad) {
  return translate_errors([&] {
    constexpr std::string_view op = "rope";
    const DeviceScope scope(q);
    const RopeLayout l = layout_of(layout);
    const TensorView vq = to_view(op, "q", q), vk = to_view(op, "k", k);
    at::Tensor bad = bad_count(q, count_bad);
    kiln::rope(vq, vk, vq, vk, to_view(op, "cos_sin_cache", cos_sin_cache),
               to_view(op, "positions", positions), l, rotary_dim,
               bad_count_view(op, "bad_positions", bad), scope.stream());
    return bad;
  });
}

void impl_rope_ops(torch::Library& m) {
  m.impl("rope", &rope_op);
  m.impl("rope_inplace", &rope_inplace_op);
  m.impl("rope_backward", &rope_backward_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.rope");
  // (q_out, k_out, bad_count): q [T, Hq, D], k [T, Hk, D] rotated by cos_sin_cache[positions]
  // (f32 [P, R]: cos | sin), layout "neox" or "gptj", the first rotary_dim elements of each head;
  // the count int32 [1] (count_bad=False: not counted, int32 [0]).
  m.def(
      "rope(Tensor q, Tensor k, Tensor cos_sin_cache, Tensor positions, str layout, "
      "int rotary_dim, bool count_bad=True) -> (Tensor, Tensor, Tensor)");
  // In place on q and k (views into a fused qkv buffer work); returns the bad-position count.
  m.def(
      "rope_inplace(Tensor(a!) q, Tensor(b!) k, Tensor cos_sin_cache, Tensor positions, "
      "str layout, int rotary_dim, bool count_bad=True) -> Tensor");
  // (dq, dk): dq_out, dk_out rotated by -theta (rope's gradient).
  m.def(
      "rope_backward(Tensor dq_out, Tensor dk_out, Tensor cos_sin_cache, Tensor positions, "
      "str layout, int rotary_dim) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_rope_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_rope_ops(m);
}
#endif
