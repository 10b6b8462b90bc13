#pragma once
// A validated quantize_fp8 / quantize_fp8_static / dequantize_fp8 in the plain form both backends
// take: x (or out) and values as row matrices, the scales as a grid of tiles.
#include <cstdint>
#include <string>

#include "core/check.h"
#include "kiln/core/tensor_view.h"
#include "kiln/ops/quantize.h"

namespace kiln {

// x seen as [M, N] is cut into grid_rows x grid_cols tiles of tile_rows x tile_cols (the last
// ones partial); tile (i, j) has its fp32 scale at scales[i * row_stride + j * col_stride]. Element
// (r, c) belongs to tile (r / tile_rows, c / tile_cols).
struct QuantTiles {
  int64_t tile_rows = 1, tile_cols = 1;
  int64_t grid_rows = 0, grid_cols = 0;
  float* scales = nullptr;
  int64_t row_stride = 0, col_stride = 0;
};

inline float fp8_max(DType fp8) {
  return fp8 == DType::f8e5m2 ? 57344.f : 448.f;
}

// The tile a granularity gives x of M rows of N (tensor: one tile of max(M, 1) x N).
inline QuantTiles quant_tiles(QuantGranularity g, int64_t m, int64_t n) {
  constexpr int64_t kEdge = 128;
  QuantTiles t;
  switch (g) {
    case QuantGranularity::tensor:
      t.tile_rows = m > 0 ? m : 1;
      t.tile_cols = n;
      break;
    case QuantGranularity::row:
      t.tile_cols = n;
      break;
    case QuantGranularity::group:
      t.tile_cols = kEdge;
      break;
    case QuantGranularity::block:
      t.tile_rows = kEdge;
      t.tile_cols = kEdge;
      break;
  }
  t.grid_rows = g == QuantGranularity::tensor ? 1 : (m + t.tile_rows - 1) / t.tile_rows;
  t.grid_cols = (n + t.tile_cols - 1) / t.tile_cols;
  return t;
}

struct QuantizeProblem {
  std::string op;
  Device device;
  QuantGranularity granularity = QuantGranularity::group;
  DType fp8 = DType::f8e4m3;
  bool static_scale = false;  // tiles.scales holds the given per-tensor scale (read, not written)
  check::RowMatrix x, values;
  QuantTiles tiles;
  float amax_floor = 1e-4f, amax_ceiling = INFINITY;
  void* workspace = nullptr;  // per-tensor dynamic on CUDA: the running absmax (4 bytes)
  // CUDA, internal callers only (fused_moe's w8a8 intermediate): a device scalar; rows at or past
  // it are left unwritten (values and scales). Null: every row.
  const int32_t* rows_used = nullptr;
};

struct DequantizeProblem {
  std::string op;
  Device device;
  QuantGranularity granularity = QuantGranularity::group;
  check::RowMatrix values, out;
  QuantTiles tiles;  // scales read
};

}  // namespace kiln
