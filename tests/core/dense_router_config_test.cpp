// The routers' launch shapes, pure functions. The dense router's fused kernel
// (src/cuda/topk/router_launch.h): the slices of H cover it in whole 256-element steps, about two
// blocks a SM, and the scratch holds the logits, the partials and the counter. The warp-a-row
// kernels' block size (topk_launch.h): every SM gets a block while rows allow.
#include <gtest/gtest.h>

#include "cuda/topk/router_launch.h"
#include "cuda/topk/topk_launch.h"

namespace kiln {
namespace {

TEST(RowWarpsPerBlock, AsManyAsKeepEverySmBusyUpToTheMax) {
  for (int sms : {1, 132}) {
    for (int64_t rows : std::initializer_list<int64_t>{1, 64, 131, 132, 263, 264, 1000, 1056, 16384,
                                                       int64_t{1} << 40}) {
      const int warps = cuda::row_warps_per_block(rows, sms, 8);
      SCOPED_TRACE(std::to_string(sms) + " " + std::to_string(rows));
      EXPECT_TRUE(warps == 1 || warps == 2 || warps == 4 || warps == 8);
      const int64_t blocks = (rows + warps - 1) / warps;
      if (warps > 1) {
        EXPECT_GE(blocks, sms);  // more warps a block never left an SM without one
      }
      if (warps < 8) {
        EXPECT_LT(rows, int64_t{sms} * 2 * warps);  // twice the warps would have
      }
    }
  }
  EXPECT_EQ(cuda::row_warps_per_block(64, 132, 8), 1);
  EXPECT_EQ(cuda::row_warps_per_block(16384, 132, 8), 8);
  EXPECT_EQ(cuda::row_warps_per_block(1000, 132, 8), 4);
}

TEST(DenseRouterConfig, SlicesCoverHInAlignedStepsAtAboutTwoBlocksASm) {
  for (int64_t experts : {8, 64, 256, 1000}) {
    for (int64_t hidden : {1, 100, 256, 4096, 7168, 7169}) {
      for (int sms : {1, 132}) {
        const int64_t splits = cuda::dense_router_splits(experts, hidden, sms);
        const int64_t slice = cuda::dense_router_slice(hidden, splits);
        SCOPED_TRACE(std::to_string(experts) + " " + std::to_string(hidden) + " " +
                     std::to_string(sms));
        EXPECT_GE(splits, 1);
        EXPECT_EQ(slice % cuda::kDenseRouterSliceAlign, 0);
        EXPECT_GE(splits * slice, hidden);        // every column in a slice
        EXPECT_LT((splits - 1) * slice, hidden);  // no empty slice
        const int64_t blocks = (experts + 7) / 8 * splits;
        if (splits > 1) EXPECT_LE(blocks, 2 * sms + (experts + 7) / 8);
      }
    }
  }
  // DeepSeek-V3's gate on an H100: 32 expert blocks x 7 slices of 1024 = 224 blocks.
  EXPECT_EQ(cuda::dense_router_splits(256, 7168, 132), 7);
  EXPECT_EQ(cuda::dense_router_slice(7168, 7), 1024);
}

TEST(DenseRouterConfig, WorkspaceHoldsLogitsPartialsAndCounter) {
  // T = 16: logits 16 x 256 x 4 = 16384, partials 7 x that, 256 for the counter.
  EXPECT_EQ(cuda::dense_router_workspace_bytes(16, 256, 7168, 132), 16384u + 7 * 16384u + 256u);
  // T = 17 takes the GEMM: the logits alone.
  EXPECT_EQ(cuda::dense_router_workspace_bytes(17, 256, 7168, 132), 17408u);
  EXPECT_EQ(cuda::dense_router_workspace_bytes(1, 3, 5, 132), 256u + 256u + 256u);
}

}  // namespace
}  // namespace kiln
