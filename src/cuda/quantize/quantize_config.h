#pragma once
// Launch shapes of the FP8 quantization kernels: pure functions of the problem, unit-tested on
// the host (tests/core/quantize_config_test.cpp).
//
// The tile kernel gives each tile (a 1 x 128 group, a row, a 128 x 128 block) to a team of
// threads that loads it into registers, reduces its absmax, scales, converts and stores it: one
// pass over x. A thread makes `items` accesses of `vec_width` elements (16 bytes when every row
// is aligned) per tile; a tile with more accesses than team * items streams (two passes, the
// second re-reading x from L2).
// - 1 x 128 groups: a team of 64 / vec_width threads (8 for bf16/f16, 16 for f32), two 16-byte
//   accesses each, the absmax by 3-4 shuffles. One access a thread (teams of 16) ran bf16 groups
//   at 63-76% of copy on the H100 (16384 x 8192), too few bytes in flight a thread.
//   Unaligned rows: 32 threads, 4 scalar accesses each. The per-tensor quantization pass uses
//   the same 1 x 128 tiles with its one scale.
// - Rows and 128 x 128 blocks: the whole 256-thread block, up to 8 accesses a thread (a 128 x
//   128 bf16 block, or a 16384-wide bf16 row, in registers: 32 registers of packed bf16), the
//   absmax through shared memory. Wider rows (and f32 blocks) stream. Tiles of at most 1024
//   accesses (an 8192-wide bf16 row) take a 4-access kernel: the 8-access one needs 117
//   registers, two blocks a SM, and quantized 16384 x 8192 bf16 rows at 53% of copy (H100).
// A block of kQuantThreads holds 256 / team teams: teams_x across a row of tiles (a power of two,
// no more than the row has) and teams_y tile rows; blockIdx.x walks the tile columns,
// blockIdx.y (and a loop of stride gridDim.y * teams_y) the tile rows.
#include <algorithm>
#include <cstdint>

namespace kiln::cuda {

inline constexpr int kQuantThreads = 256;
inline constexpr int kQuantWideItems = 8;
inline constexpr int kQuantWideItemsSmall = 4;

// Threads of a 1 x 128 group's team for accesses of vec_width elements.
constexpr int quant_group_team(int vec_width) {
  return vec_width > 1 ? 64 / vec_width : 32;
}

struct QuantTileConfig {
  int vec_width = 1;
  int team = 32;
  int items = 4;
  int teams_x_log2 = 0;
  int teams_y = 1;
  int64_t grid_x = 1, grid_y = 1;
};

// grid_rows x grid_cols tiles; `wide`: a team of the whole block (rows, blocks), else 1 x 128
// groups; elem_bytes: x's element size; aligned: 16-byte accesses possible; tile_vecs: a tile's
// accesses (wide tiles only).
inline QuantTileConfig quant_tile_config(int64_t grid_rows, int64_t grid_cols, bool wide,
                                         int elem_bytes, bool aligned, int64_t tile_vecs = 0) {
  QuantTileConfig c;
  c.vec_width = aligned ? 16 / elem_bytes : 1;
  if (wide) {
    c.team = kQuantThreads;
    c.items = tile_vecs > 0 && tile_vecs <= int64_t{kQuantThreads} * kQuantWideItemsSmall
                  ? kQuantWideItemsSmall
                  : kQuantWideItems;
  } else {
    c.team = quant_group_team(c.vec_width);
    c.items = 128 / (c.vec_width * c.team);
  }
  const int teams = kQuantThreads / c.team;
  int teams_x = 1;
  while (teams_x < teams && teams_x < grid_cols) {
    teams_x *= 2;
    ++c.teams_x_log2;
  }
  c.teams_y = teams / teams_x;
  c.grid_x = std::max<int64_t>(1, (grid_cols + teams_x - 1) / teams_x);
  c.grid_y = std::clamp<int64_t>((grid_rows + c.teams_y - 1) / c.teams_y, 1, 65535);
  return c;
}

// The per-tensor absmax pass: row_launch's shape, its rows folded so that about 16 blocks a SM
// each loop over many rows (a 4-row unrolled loop keeps 4 accesses in flight a thread).
inline int64_t absmax_grid_y(int64_t row_blocks, int64_t grid_x, int sm_count) {
  const int64_t target =
      std::max<int64_t>(1, 16 * int64_t{sm_count} / std::max<int64_t>(grid_x, 1));
  return std::clamp<int64_t>(std::min(row_blocks, target), 1, 65535);
}

}  // namespace kiln::cuda
