// The FP8 quantization kernels' launch shapes (src/cuda/quantize/quantize_config.h).
#include <gtest/gtest.h>

#include "cuda/quantize/quantize_config.h"

namespace kiln::cuda {
namespace {

TEST(QuantizeConfig, GroupsGetATeamOfTwoAccessesAThread) {
  // bf16 16384 x 8192: 64 groups a row, 32 teams of 8 threads a block, all across one row.
  QuantTileConfig c = quant_tile_config(16384, 64, false, 2, true);
  EXPECT_EQ(c.vec_width, 8);
  EXPECT_EQ(c.team, 8);
  EXPECT_EQ(c.items, 2);
  EXPECT_EQ(1 << c.teams_x_log2, 32);
  EXPECT_EQ(c.teams_y, 1);
  EXPECT_EQ(c.grid_x, 2);
  EXPECT_EQ(c.grid_y, 16384);
  // f32: 4-element accesses, 16 threads a group; N = 128: one group a row, 16 rows a block.
  c = quant_tile_config(1000, 1, false, 4, true);
  EXPECT_EQ(c.team, 16);
  EXPECT_EQ(c.items, 2);
  EXPECT_EQ(c.teams_x_log2, 0);
  EXPECT_EQ(c.teams_y, 16);
  EXPECT_EQ(c.grid_y, 63);
  // Unaligned: scalar accesses, 32 threads x 4 a group; 3 groups a row round up to 4 teams.
  c = quant_tile_config(5, 3, false, 2, false);
  EXPECT_EQ(c.vec_width, 1);
  EXPECT_EQ(c.team * c.items, 128);
  EXPECT_EQ(1 << c.teams_x_log2, 4);
  EXPECT_EQ(c.teams_y, 2);
  EXPECT_EQ(c.grid_x, 1);
  EXPECT_EQ(c.grid_y, 3);
}

TEST(QuantizeConfig, RowsAndBlocksTakeTheWholeBlockAndFoldRowsPast65535) {
  QuantTileConfig c = quant_tile_config(200000, 1, true, 2, true);
  EXPECT_EQ(c.team, kQuantThreads);
  EXPECT_EQ(c.items, kQuantWideItems);
  EXPECT_EQ(c.teams_y, 1);
  EXPECT_EQ(c.grid_x, 1);
  EXPECT_EQ(c.grid_y, 65535);
  // A 128 x 128 bf16 block is exactly 256 threads x 8 accesses of 8.
  EXPECT_EQ(c.team * c.items * c.vec_width, 128 * 128);
  c = quant_tile_config(128, 64, true, 2, true);
  EXPECT_EQ(c.grid_x, 64);
  EXPECT_EQ(c.grid_y, 128);
  // Tiles of at most 256 x 4 accesses (an 8192-wide bf16 row) take the 4-access kernel; a
  // 128 x 128 bf16 block (2048 accesses) and wider rows the 8-access one.
  EXPECT_EQ(quant_tile_config(16384, 1, true, 2, true, 1024).items, kQuantWideItemsSmall);
  EXPECT_EQ(quant_tile_config(16384, 1, true, 2, true, 1025).items, kQuantWideItems);
  EXPECT_EQ(quant_tile_config(128, 64, true, 2, true, 2048).items, kQuantWideItems);
}

TEST(QuantizeConfig, AbsmaxGridAimsAtSixteenBlocksASm) {
  EXPECT_EQ(absmax_grid_y(16384, 4, 132), 528);  // 4 x 528 = 16 x 132
  EXPECT_EQ(absmax_grid_y(3, 4, 132), 3);
  EXPECT_EQ(absmax_grid_y(100, 10000, 132), 1);
}

}  // namespace
}  // namespace kiln::cuda
