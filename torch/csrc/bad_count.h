#pragma once
// The int32 count an op's kernel adds its reports to (out-of-range entries it never read): a
// zeroed int32 [1] when the caller asks for one; otherwise int32 [0], handed to the op as an
// absent view, so that no zero-fill kernel runs for a count nobody reads (on a 54 us gather that
// kernel and its launch gap were ~4%; bench/results/2026-11-24-h100-s13).
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <string_view>

#include "tensor_view.h"

namespace kiln::torch_binding {

inline at::Tensor bad_count(const at::Tensor& like, bool count_bad) {
  return count_bad ? at::zeros({1}, like.options().dtype(at::kInt))
                   : at::empty({0}, like.options().dtype(at::kInt));
}

inline TensorView bad_count_view(std::string_view op, std::string_view arg, const at::Tensor& bad) {
  return bad.numel() == 0 ? TensorView{} : to_view(op, arg, bad);
}

}  // namespace kiln::torch_binding
