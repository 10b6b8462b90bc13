// torch.ops.kiln.moe_align_block_size (include/kiln/ops/moe_align.h): schema, and CPU and CUDA
// impls over the kiln entry point. Fake impl: torch/kiln/_ops/moe_align.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "kiln/ops/moe_align.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

using OptTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> moe_align_op(const at::Tensor& topk_ids,
                                                                        int64_t num_experts,
                                                                        int64_t block_size,
                                                                        const OptTensor& expert_map,
                                                                        int64_t num_local_experts) {
  return translate_errors([&] {
    constexpr std::string_view op = "moe_align_block_size";
    const DeviceScope scope(topk_ids);
    const bool shaped = topk_ids.dim() == 2 && block_size > 0;
    const int64_t cap = shaped ? moe_align_capacity(topk_ids.size(0), topk_ids.size(1),
                                                    num_local_experts, block_size)
                               : 0;
    const auto i32 = topk_ids.options().dtype(at::kInt);
    at::Tensor sorted = at::empty({cap}, i32);
    at::Tensor expert_ids = at::empty({shaped ? cap / block_size : 0}, i32);
    at::Tensor post_pad = at::empty({1}, i32);
    at::Tensor bad = at::zeros({1}, i32);
    kiln::moe_align_block_size(
        to_view(op, "sorted_token_ids", sorted), to_view(op, "expert_ids", expert_ids),
        to_view(op, "num_tokens_post_pad", post_pad), to_view(op, "bad_ids", bad),
        to_view(op, "topk_ids", topk_ids), num_experts, block_size,
        to_view(op, "expert_map", expert_map), num_local_experts, scope.stream());
    return std::make_tuple(sorted, expert_ids, post_pad, bad);
  });
}

void impl_moe_align_ops(torch::Library& m) {
  m.impl("moe_align_block_size", &moe_align_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.moe_align");
  // (sorted_token_ids, expert_ids, num_tokens_post_pad, bad id count), all int32.
  m.def(
      "moe_align_block_size(Tensor topk_ids, int num_experts, int block_size, Tensor? "
      "expert_map, int num_local_experts) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_moe_align_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_moe_align_ops(m);
}
#endif
