#pragma once
// The quantization kernels' arguments and typed launchers, shared by quantize.cu (which picks
// and orders them) and the files that instantiate them.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/quantize/quantize_config.h"
#include "kiln/core/dtype.h"

namespace kiln::cuda {

// One tile kernel launch. The tiling here is the kernel's: for per-tensor scales it is 1 x 128
// groups sharing the one scale.
struct QuantTileArgs {
  const void* x;
  void* values;
  int64_t x_stride, values_stride;
  int64_t rows, cols;
  int64_t tile_rows, tile_cols, grid_rows, grid_cols;
  int64_t tile_vecs;      // accesses of a tile: tile_rows * vecs_per_row
  int vecs_per_row_log2;  // for tile_rows > 1: tile_cols / vec_width, a power of two
  int teams_x_log2, teams_y;
  // Where the scale comes from: given_scale (static, read), else given_amax (per-tensor dynamic:
  // the absmax pass's bits, the scale written to scales[0] once), else each tile's absmax (the
  // scale written to scales[i * scale_row_stride + j * scale_col_stride]).
  const float* given_scale;
  const uint32_t* given_amax;
  float* scales;
  int64_t scale_row_stride, scale_col_stride;
  float amax_floor, amax_ceiling;
  const int32_t* rows_used;  // device scalar: rows at or past it skipped; null: all
};

// Launches the tile kernel for x's dtype and the fp8 format, with config c; or, for 1 x 128 groups
// with their own dynamic scales on the 16-byte path, the group kernel. Returns the kernel's name.
const char* launch_quant_tiles(const QuantTileArgs& a, const QuantTileConfig& c, DType x_dtype,
                               DType fp8, cudaStream_t stream);

// max |x| over a [rows, cols] matrix (NaN ignored) folded into *amax_bits (which the caller
// zeroed) as fp32 bits, by atomicMax: the same bits on every run. vec_width: 16 / element bytes
// when every row is aligned, else 1.
void launch_absmax(const void* x, int64_t x_stride, int64_t rows, int64_t cols, DType x_dtype,
                   int vec_width, uint32_t* amax_bits, int sm_count, cudaStream_t stream);

}  // namespace kiln::cuda
