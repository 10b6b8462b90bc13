// torch.ops.kiln.gather_rows / gather_rows_pair (include/kiln/ops/gather.h): each returns the
// gathered rows and a fresh int32 [1] count of out-of-range indices (the kernel's report; reading
// it is the caller's choice, so the op itself never synchronises); with count_bad=False an empty
// int32 [0] instead, and no zero-fill kernel launched for it. Fake impls:
// torch/kiln/_ops/gather.py.
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <tuple>

#include "bad_count.h"
#include "kiln/ops/gather.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

at::Tensor gathered_like(const at::Tensor& src, const at::Tensor& index) {
  std::vector<int64_t> sizes(src.sizes().begin(), src.sizes().end());
  if (!sizes.empty()) sizes[0] = index.dim() == 1 ? index.size(0) : 0;
  return at::empty(sizes, src.options());
}

std::tuple<at::Tensor, at::Tensor> gather_rows_op(const at::Tensor& src, const at::Tensor& index,
                                                  bool count_bad) {
  return translate_errors([&] {
    constexpr std::string_view op = "gather_rows";
    const DeviceScope scope(src);
    at::Tensor out = gathered_like(src, index), bad = bad_count(src, count_bad);
    kiln::gather_rows(to_view(op, "out", out), to_view(op, "src", src), to_view(op, "index", index),
                      bad_count_view(op, "bad_indices", bad), scope.stream());
    return std::make_tuple(out, bad);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gather_rows_pair_op(const at::Tensor& k,
                                                                   const at::Tensor& v,
                                                                   const at::Tensor& index,
                                                                   bool count_bad) {
  return translate_errors([&] {
    constexpr std::string_view op = "gather_rows_pair";
    const DeviceScope scope(k);
    at::Tensor ok = gathered_like(k, index), ov = gathered_like(v, index),
               bad = bad_count(k, count_bad);
    kiln::gather_rows_pair(to_view(op, "out_k", ok), to_view(op, "out_v", ov), to_view(op, "k", k),
                           to_view(op, "v", v), to_view(op, "index", index),
                           bad_count_view(op, "bad_indices", bad), scope.stream());
    return std::make_tuple(ok, ov, bad);
  });
}

void impl_gather_ops(torch::Library& m) {
  m.impl("gather_rows", &gather_rows_op);
  m.impl("gather_rows_pair", &gather_rows_pair_op);
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.gather");
  // (src[index], bad_count): rows along dim 0; out-of-range indices give zero rows, counted
  // (int32 [1]; count_bad=False: not counted, int32 [0]).
  m.def("gather_rows(Tensor src, Tensor index, bool count_bad=True) -> (Tensor, Tensor)");
  m.def(
      "gather_rows_pair(Tensor k, Tensor v, Tensor index, bool count_bad=True) -> (Tensor, "
      "Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  kiln::torch_binding::impl_gather_ops(m);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  kiln::torch_binding::impl_gather_ops(m);
}
#endif
