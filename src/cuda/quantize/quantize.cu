// quantize_fp8 on CUDA: picks the tile kernel's shape for the granularity and alignment, and for
// per-tensor dynamic scales runs the absmax pass first (into the workspace word, zeroed here).
#include <cuda_runtime.h>

#include <string>

#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/row_launch.h"
#include "cuda/quantize/quantize_kernels.h"
#include "cuda/quantize/quantize_launch.h"

namespace kiln::cuda {
namespace {

int log2_exact(int64_t v) {
  int k = 0;
  while ((int64_t{1} << k) < v) ++k;
  return k;
}

}  // namespace

std::string quantize_fp8(const QuantizeProblem& p, Stream stream) {
  const bool per_tensor = p.granularity == QuantGranularity::tensor;
  if (p.x.rows == 0 && !per_tensor) return "empty";
  const int elem_bytes = static_cast<int>(dtype_size(p.x.dtype));
  const bool vec = rows_vector_aligned(p.x.cols, 16 / elem_bytes, {&p.x, &p.values});
  const bool wide =
      p.granularity == QuantGranularity::row || p.granularity == QuantGranularity::block;
  // Per-tensor scales: the kernel's tiles are 1 x 128 groups (at least one, to write the scale).
  QuantTiles tiling =
      per_tensor ? quant_tiles(QuantGranularity::group, p.x.rows, p.x.cols) : p.tiles;
  if (per_tensor && tiling.grid_rows == 0) tiling.grid_rows = 1;
  const int vec_width = vec ? 16 / elem_bytes : 1;
  const int64_t vecs_per_row = (tiling.tile_cols + vec_width - 1) / vec_width;
  const QuantTileConfig c = quant_tile_config(tiling.grid_rows, tiling.grid_cols, wide, elem_bytes,
                                              vec, tiling.tile_rows * vecs_per_row);
  QuantTileArgs a{};
  a.x = p.x.data;
  a.values = p.values.data;
  a.x_stride = p.x.row_stride;
  a.values_stride = p.values.row_stride;
  a.rows = p.x.rows;
  a.cols = p.x.cols;
  a.tile_rows = tiling.tile_rows;
  a.tile_cols = tiling.tile_cols;
  a.grid_rows = tiling.grid_rows;
  a.grid_cols = tiling.grid_cols;
  a.tile_vecs = tiling.tile_rows * vecs_per_row;
  a.vecs_per_row_log2 = tiling.tile_rows > 1 ? log2_exact(vecs_per_row) : 0;
  a.teams_x_log2 = c.teams_x_log2;
  a.teams_y = c.teams_y;
  a.scales = p.tiles.scales;
  a.scale_row_stride = p.tiles.row_stride;
  a.scale_col_stride = p.tiles.col_stride;
  a.amax_floor = p.amax_floor;
  a.amax_ceiling = p.amax_ceiling;
  a.rows_used = p.rows_used;
  std::string how;
  if (p.static_scale) {
    a.given_scale = p.tiles.scales;
    a.scales = nullptr;
    how = "tensor:static";
  } else if (per_tensor) {
    auto* amax = static_cast<uint32_t*>(p.workspace);
    KILN_CUDA_CHECK(cudaMemsetAsync(amax, 0, sizeof(uint32_t), stream));
    launch_absmax(p.x.data, p.x.row_stride, p.x.rows, p.x.cols, p.x.dtype, c.vec_width, amax,
                  sm_count(p.device), stream);
    a.given_amax = amax;
    how = "tensor:absmax+quantize";
  } else {
    how = std::string(granularity_name(p.granularity));
  }
  const char* kernel = launch_quant_tiles(a, c, p.x.dtype, p.fp8, stream);
  std::string variant = "quantize_fp8<" + std::string(kernel) + "," +
                        std::string(dtype_name(p.x.dtype)) + "," + std::string(dtype_name(p.fp8)) +
                        "," + how + ",vec" + std::to_string(c.vec_width) + ",team" +
                        std::to_string(c.team) + "x" + std::to_string(c.items) + ">";
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
