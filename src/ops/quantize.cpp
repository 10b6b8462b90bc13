// Entry points of FP8 quantization: validate -> pick the backend -> run -> receipt.
#include "kiln/ops/quantize.h"

#include <cmath>
#include <string>

#include "core/backend.h"
#include "core/check.h"
#include "cuda/quantize/quantize_launch.h"
#include "ops/quantize_problem.h"
#include "ref/quantize.h"

namespace kiln {
namespace {

std::string dims(int64_t a, int64_t b) {
  std::string s(1, '[');
  s.append(std::to_string(a)).append(", ").append(std::to_string(b)).push_back(']');
  return s;
}

// x's (or out's) rows: f32/bf16/f16, N >= 1.
check::RowMatrix float_rows(std::string_view op, std::string_view arg, const TensorView& t) {
  check::present(op, arg, t);
  check::dtype_in(op, arg, t, {DType::f32, DType::bf16, DType::f16});
  check::rank_at_least(op, arg, t, 1);
  if (t.size(-1) < 1) throw_arg_error(op, arg, "a last dim >= 1", "shape " + t.shape_str());
  return check::rows_of(op, arg, t);
}

// values: of `like`'s shape, e4m3 or e5m2, on its device.
check::RowMatrix fp8_rows(std::string_view op, std::string_view arg, const TensorView& t,
                          const TensorView& like) {
  check::present(op, arg, t);
  check::same_device(op, arg, t, like.device);
  check::dtype_in(op, arg, t, {DType::f8e4m3, DType::f8e5m2});
  check::same_shape(op, arg, t, like);
  return check::rows_of(op, arg, t);
}

// The scales tensor of `g` for x (M rows of N): its shape, and its strides as the tile grid's.
// Row and group scales may carry x's leading dims ([..., G]) in place of M; their leading dims
// must collapse into one stride. Written scales must not overlap: strides [>= G, 1] (row-major)
// or [1, >= M] (MN-major).
QuantTiles scale_grid(std::string_view op, std::string_view arg, const TensorView& s,
                      const TensorView& x, QuantGranularity g, int64_t m, bool written) {
  QuantTiles t = quant_tiles(g, m, x.size(-1));
  check::present(op, arg, s);
  check::same_device(op, arg, s, x.device);
  check::dtype_in(op, arg, s, {DType::f32});
  t.scales = static_cast<float*>(s.data);
  if (g == QuantGranularity::tensor) {
    if (s.numel() != 1)
      throw_arg_error(op, arg, "one element ([] or [1])", "shape " + s.shape_str());
    return t;
  }
  bool ok = s.rank == 2 && s.size(0) == t.grid_rows && s.size(1) == t.grid_cols;
  const bool per_row = g != QuantGranularity::block;
  if (!ok && per_row && s.rank == x.rank) {
    ok = s.size(-1) == t.grid_cols;
    for (int d = 0; d + 1 < x.rank; ++d) ok = ok && s.size(d) == x.size(d);
  }
  if (!ok) {
    throw_arg_error(
        op, arg,
        "shape " + dims(t.grid_rows, t.grid_cols) +
            (per_row ? " (or x's leading dims + [" + std::to_string(t.grid_cols) + "])" : "") +
            " for " + std::string(granularity_name(g)) + " scales",
        "shape " + s.shape_str());
  }
  t.col_stride = s.stride(-1);
  int64_t rows = 1;
  bool have_stride = false;
  for (int d = s.rank - 2; d >= 0; --d) {  // leading dims collapse into one stride
    if (s.size(d) == 1) continue;
    if (!have_stride) {
      t.row_stride = s.stride(d);
      have_stride = true;
    } else if (s.stride(d) != rows * t.row_stride) {
      throw_arg_error(op, arg, "leading dims that collapse into one row stride",
                      "strides that do not, on shape " + s.shape_str());
    }
    rows *= s.size(d);
  }
  if (written && t.grid_rows > 1 && t.grid_cols > 1) {
    const bool row_major = t.col_stride == 1 && t.row_stride >= t.grid_cols;
    const bool mn_major = t.row_stride == 1 && t.col_stride >= t.grid_rows;
    if (!row_major && !mn_major) {
      throw_arg_error(op, arg,
                      "strides [>= " + std::to_string(t.grid_cols) + ", 1] (row-major) or [1, >= " +
                          std::to_string(t.grid_rows) + "] (MN-major)",
                      "strides " + dims(t.row_stride, t.col_stride));
    }
  } else if (written &&
             ((t.grid_rows > 1 && t.row_stride < 1) || (t.grid_cols > 1 && t.col_stride < 1))) {
    throw_arg_error(op, arg, "scales that do not overlap (strides >= 1)",
                    "strides " + dims(t.row_stride, t.col_stride));
  }
  return t;
}

void check_config(std::string_view op, const QuantConfig& c) {
  if (c.group_size != 128) {
    throw_arg_error(op, "config.group_size", "128", std::to_string(c.group_size));
  }
  if (!(c.amax_floor >= 1e-30f) || !std::isfinite(c.amax_floor)) {
    throw_arg_error(op, "config.amax_floor", "a finite value >= 1e-30",
                    std::to_string(c.amax_floor));
  }
  if (!(c.amax_ceiling >= c.amax_floor)) {
    throw_arg_error(op, "config.amax_ceiling",
                    "a value >= amax_floor (" + std::to_string(c.amax_floor) + ")",
                    std::to_string(c.amax_ceiling));
  }
}

// The part of a quantization problem both entry points share: x, values and the fp8 format.
QuantizeProblem quantize_problem(std::string_view op, const TensorView& values,
                                 const TensorView& x) {
  QuantizeProblem p;
  p.op = op;
  p.x = float_rows(op, "x", x);
  p.device = x.device;
  p.values = fp8_rows(op, "values", values, x);
  p.fp8 = values.dtype;
  return p;
}

void run(const QuantizeProblem& p, Stream stream) {
  run_on_backend(
      p, "ref::quantize_fp8", [&] { ref::quantize_fp8(p); },
      [&] { return cuda::quantize_fp8(p, stream); });
}

}  // namespace

std::string_view granularity_name(QuantGranularity g) {
  switch (g) {
    case QuantGranularity::tensor:
      return "tensor";
    case QuantGranularity::row:
      return "row";
    case QuantGranularity::group:
      return "group";
    case QuantGranularity::block:
      return "block";
  }
  return "?";
}

size_t quantize_fp8_workspace_size(const TensorView& x, const QuantConfig& config) {
  return x.device.is_cuda() && config.granularity == QuantGranularity::tensor ? 4 : 0;
}

void quantize_fp8(const TensorView& values, const TensorView& scales, const TensorView& x,
                  const QuantConfig& config, const Workspace& workspace, Stream stream) {
  constexpr std::string_view op = "quantize_fp8";
  QuantizeProblem p = quantize_problem(op, values, x);
  check_config(op, config);
  p.granularity = config.granularity;
  p.amax_floor = config.amax_floor;
  p.amax_ceiling = config.amax_ceiling;
  p.tiles = scale_grid(op, "scales", scales, x, p.granularity, p.x.rows, true);
  const size_t needed = quantize_fp8_workspace_size(x, config);
  if (needed > 0 && (workspace.data == nullptr || workspace.bytes < needed)) {
    throw_arg_error(op, "workspace", ">= " + std::to_string(needed) + " bytes",
                    std::to_string(workspace.data ? workspace.bytes : 0) + " bytes");
  }
  p.workspace = workspace.data;
  run(p, stream);
}

void quantize_fp8_static(const TensorView& values, const TensorView& x, const TensorView& scale,
                         Stream stream) {
  constexpr std::string_view op = "quantize_fp8_static";
  QuantizeProblem p = quantize_problem(op, values, x);
  p.granularity = QuantGranularity::tensor;
  p.static_scale = true;
  p.tiles = scale_grid(op, "scale", scale, x, p.granularity, p.x.rows, false);
  run(p, stream);
}

void dequantize_fp8(const TensorView& out, const TensorView& values, const TensorView& scales,
                    QuantGranularity granularity, Stream stream) {
  constexpr std::string_view op = "dequantize_fp8";
  DequantizeProblem p;
  p.op = op;
  p.device = values.device;
  check::present(op, "values", values);
  check::dtype_in(op, "values", values, {DType::f8e4m3, DType::f8e5m2});
  check::rank_at_least(op, "values", values, 1);
  if (values.size(-1) < 1) {
    throw_arg_error(op, "values", "a last dim >= 1", "shape " + values.shape_str());
  }
  p.values = check::rows_of(op, "values", values);
  p.out = float_rows(op, "out", out);
  check::same_device(op, "out", out, values.device);
  check::same_shape(op, "out", out, values);
  p.granularity = granularity;
  p.tiles = scale_grid(op, "scales", scales, values, granularity, p.values.rows, false);
  run_on_backend(
      p, "ref::dequantize_fp8", [&] { ref::dequantize_fp8(p); },
      [&] { return cuda::dequantize_fp8(p, stream); });
}

}  // namespace kiln
