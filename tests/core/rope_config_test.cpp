// The rope kernel's launch shape (src/cuda/rope/rope_config.h), a pure function checked here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>

#include "cuda/rope/rope_config.h"

namespace kiln {
namespace {

TEST(RopeConfig, LlamaShapesFillTheBlockWithEvenHeadCounts) {
  // bf16 D = 128: 8 chunks of 8 pairs. 32 + 32 heads: 32 lanes x 2 heads.
  cuda::RopeConfig c = cuda::rope_config(16384, 64, 8);
  EXPECT_EQ(c.chunk_lanes, 8);
  EXPECT_EQ(c.head_lanes, 32);
  EXPECT_EQ(c.heads_per_thread, 2);
  EXPECT_EQ(c.token_lanes, 1);
  EXPECT_EQ(c.grid, 16384);
  // GQA 32 + 8: 20 lanes x 2 heads, none idle, 160 threads.
  c = cuda::rope_config(16384, 40, 8);
  EXPECT_EQ(c.head_lanes, 20);
  EXPECT_EQ(c.heads_per_thread, 2);
  EXPECT_EQ(c.threads(), 160);
}

TEST(RopeConfig, FewHeadsTakeMoreTokensAndDecodeOne) {
  cuda::RopeConfig c = cuda::rope_config(1000, 2, 4);
  EXPECT_EQ(c.head_lanes, 2);
  EXPECT_EQ(c.token_lanes, 32);
  EXPECT_EQ(c.grid, 32);
  c = cuda::rope_config(1, 40, 8);
  EXPECT_EQ(c.token_lanes, 1);
  EXPECT_EQ(c.grid, 1);
  c = cuda::rope_config(5000, 1, 1);  // blockDim.z stops at 64
  EXPECT_EQ(c.token_lanes, cuda::kRopeMaxTokenLanes);
}

TEST(RopeConfig, WideHeadsLoopAndHugeTokenCountsGridStride) {
  cuda::RopeConfig c = cuda::rope_config(3, 4, 512);  // the scalar path at R = 1024
  EXPECT_EQ(c.chunk_lanes, cuda::kRopeMaxThreads);
  EXPECT_EQ(c.head_lanes, 1);
  EXPECT_EQ(c.heads_per_thread, 4);
  EXPECT_EQ(cuda::rope_config(int64_t{1} << 32, 64, 8).grid, cuda::kRopeMaxGrid);
  EXPECT_EQ(cuda::rope_config(7, 0, 8).head_lanes, 1);  // no heads: positions still counted
}

TEST(RopeConfig, EveryShapeFitsABlock) {
  for (int64_t tokens : {1, 3, 1000, 1 << 20}) {
    for (int64_t heads : {0, 1, 3, 40, 64, 96, 300}) {
      for (int64_t chunks : {1, 2, 3, 8, 16, 64, 128, 300}) {
        const cuda::RopeConfig c = cuda::rope_config(tokens, heads, chunks);
        EXPECT_LE(c.threads(), cuda::kRopeMaxThreads);
        EXPECT_LE(c.token_lanes, cuda::kRopeMaxTokenLanes);
        EXPECT_GE(int64_t{c.head_lanes} * c.heads_per_thread, heads);
        EXPECT_GE(c.grid * c.token_lanes, std::min<int64_t>(tokens, cuda::kRopeMaxGrid));
      }
    }
  }
}

}  // namespace
}  // namespace kiln
