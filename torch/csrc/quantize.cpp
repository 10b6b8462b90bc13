// torch.ops.kiln.quantize_fp8 / quantize_fp8_static / dequantize_fp8
// (include/kiln/ops/quantize.h). Functional: the outputs are allocated here — values of x's shape
// (contiguous), scales in the granularity's shape (row and group keep x's leading dims; group
// scales row-major, or MN-major: strides [..., 1, M4], M4 = M rounded up to 4, DeepGEMM's
// TMA-aligned layout) — and the per-tensor workspace word. Fake impls: torch/kiln/_ops/quantize.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "kiln/ops/quantize.h"
#include "tensor_view.h"

namespace kiln::torch_binding {
namespace {

QuantGranularity parse_granularity(std::string_view op, const std::string& g) {
  for (QuantGranularity v : {QuantGranularity::tensor, QuantGranularity::row,
                             QuantGranularity::group, QuantGranularity::block}) {
    if (g == granularity_name(v)) return v;
  }
  throw_arg_error(op, "granularity", "one of tensor, row, group, block", "'" + g + "'");
}

void check_fp8(std::string_view op, at::ScalarType dtype) {
  if (dtype != at::kFloat8_e4m3fn && dtype != at::kFloat8_e5m2) {
    throw_arg_error(op, "dtype", "torch.float8_e4m3fn or torch.float8_e5m2",
                    "torch." + c10::getDtypeNames(dtype).first);
  }
}

// The scales quantize_fp8 writes for x (see the file comment).
at::Tensor new_scales(const at::Tensor& x, QuantGranularity g, bool mn_major) {
  const auto f32 = x.options().dtype(at::kFloat);
  const int64_t n = x.dim() > 0 ? x.size(-1) : 1, groups = (n + 127) / 128;
  std::vector<int64_t> lead(x.sizes().begin(), x.sizes().end() - (x.dim() > 0 ? 1 : 0));
  int64_t m = 1;
  for (int64_t s : lead) m *= s;
  switch (g) {
    case QuantGranularity::tensor:
      return at::empty({1}, f32);
    case QuantGranularity::block:
      return at::empty({(m + 127) / 128, groups}, f32);
    case QuantGranularity::row:
    case QuantGranularity::group:
      break;
  }
  std::vector<int64_t> sizes = lead;
  sizes.push_back(g == QuantGranularity::row ? 1 : groups);
  if (!mn_major) return at::empty(sizes, f32);
  std::vector<int64_t> strides(sizes.size());
  int64_t stride = 1;
  for (int d = static_cast<int>(lead.size()) - 1; d >= 0; --d) {
    strides[d] = stride;
    stride *= lead[d];
  }
  strides.back() = (m + 3) / 4 * 4;
  return at::empty_strided(sizes, strides, f32);
}

std::tuple<at::Tensor, at::Tensor> quantize_fp8_op(const at::Tensor& x, at::ScalarType dtype,
                                                   const std::string& granularity, bool mn_major,
                                                   double amax_floor,
                                                   std::optional<double> amax_ceiling) {
  return translate_errors([&] {
    constexpr std::string_view op = "quantize_fp8";
    check_fp8(op, dtype);
    QuantConfig config;
    config.granularity = parse_granularity(op, granularity);
    if (mn_major && config.granularity != QuantGranularity::group) {
      throw_arg_error(op, "scale_layout", "row_major for " + granularity + " scales", "mn_major");
    }
    config.amax_floor = static_cast<float>(amax_floor);
    config.amax_ceiling = amax_ceiling ? static_cast<float>(*amax_ceiling) : INFINITY;
    const DeviceScope scope(x);
    const TensorView xv = to_view(op, "x", x);
    at::Tensor values = at::empty(x.sizes(), x.options().dtype(dtype));
    at::Tensor scales = new_scales(x, config.granularity, mn_major);
    const size_t ws_bytes = quantize_fp8_workspace_size(xv, config);
    at::Tensor ws;
    if (ws_bytes > 0)
      ws = at::empty({static_cast<int64_t>(ws_bytes)}, x.options().dtype(at::kByte));
    kiln::quantize_fp8(to_view(op, "values", values), to_view(op, "scales", scales), xv, config,
                       Workspace{ws_bytes ? ws.data_ptr() : nullptr, ws_bytes}, scope.stream());
    return std::make_tuple(values, scales);
  });
}

at::Tensor quantize_fp8_static_op(const at::Tensor& x, const at::Tensor& scale,
                                  at::ScalarType dtype) {
  return translate_errors([&] {
    constexpr std::string_view op = "quantize_fp8_static";
    check_fp8(op, dtype);
    const DeviceScope scope(x);
    at::Tensor values = at::empty(x.sizes(), x.options().dtype(dtype));
    kiln::quantize_fp8_static(to_view(op, "values", values), to_view(op, "x", x),
                              to_view(op, "scale", scale), scope.stream());
    return values;
  });
}

at::Tensor dequantize_fp8_op(const at::Tensor& values, const at::Tensor& scales,
                             const std::string& granularity, at::ScalarType dtype) {
  return translate_errors([&] {
    constexpr std::string_view op = "dequantize_fp8";
    const QuantGranularity g = parse_granularity(op, granularity);
    const DeviceScope scope(values);
    at::Tensor out = at::empty(values.sizes(), values.options().dtype(dtype));
    kiln::dequantize_fp8(to_view(op, "out", out), to_view(op, "values", values),
                         to_view(op, "scales", scales), g, scope.stream());
    return out;
  });
}

}  // namespace
}  // namespace kiln::torch_binding

TORCH_LIBRARY_FRAGMENT(kiln, m) {
  m.set_python_module("kiln._ops.quantize");
  // x [..., N] -> (values of x's shape in `dtype` (fp8), fp32 scales of the granularity).
  m.def(
      "quantize_fp8(Tensor x, ScalarType dtype, str granularity, bool mn_major, "
      "float amax_floor, float? amax_ceiling) -> (Tensor values, Tensor scales)");
  // x [..., N] with a given per-tensor scale (f32 [1]) -> values.
  m.def("quantize_fp8_static(Tensor x, Tensor scale, ScalarType dtype) -> Tensor");
  // values [..., N] (fp8) times their scales -> `dtype` of values' shape.
  m.def(
      "dequantize_fp8(Tensor values, Tensor scales, str granularity, ScalarType dtype) -> "
      "Tensor");
}

TORCH_LIBRARY_IMPL(kiln, CPU, m) {
  m.impl("quantize_fp8", &kiln::torch_binding::quantize_fp8_op);
  m.impl("quantize_fp8_static", &kiln::torch_binding::quantize_fp8_static_op);
  m.impl("dequantize_fp8", &kiln::torch_binding::dequantize_fp8_op);
}

#if KILN_TORCH_CUDA
TORCH_LIBRARY_IMPL(kiln, CUDA, m) {
  m.impl("quantize_fp8", &kiln::torch_binding::quantize_fp8_op);
  m.impl("quantize_fp8_static", &kiln::torch_binding::quantize_fp8_static_op);
  m.impl("dequantize_fp8", &kiln::torch_binding::dequantize_fp8_op);
}
#endif
