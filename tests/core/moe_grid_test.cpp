// fused_moe's CUDA launch shape (src/cuda/moe/fused_moe_launch.h), a pure function: the blocks of
// each kernel, and the Error past CUDA's grid limits (no silent fallback to a smaller grid).
#include <gtest/gtest.h>

#include "common/expect_error.h"
#include "cuda/moe/fused_moe_launch.h"

namespace kiln {
namespace {

MoeProblem problem(int64_t tokens, int64_t k, int64_t hidden, int64_t inter) {
  MoeProblem p;
  p.op = "fused_moe";
  p.tokens = tokens, p.k = k, p.hidden = hidden, p.inter = inter;
  return p;
}

TEST(FusedMoeGrid, APickABlockRowAndEightColumnsABlock) {
  const cuda::FusedMoeGrid g = cuda::fused_moe_grid(problem(300, 8, 4096, 1537));
  EXPECT_EQ(g.up_x, 2400);
  EXPECT_EQ(g.up_y, 193);  // ceil(1537 / 8): the last block has one live warp
  EXPECT_EQ(g.down_x, 300);
  EXPECT_EQ(g.down_y, 512);
  const cuda::FusedMoeGrid empty = cuda::fused_moe_grid(problem(1, 1, 8, 0));
  EXPECT_EQ(empty.up_y, 0);  // I = 0: the launcher skips the up kernel
}

TEST(FusedMoeGrid, PastTheGridLimitsIsAnError) {
  testing::expect_error([] { cuda::fused_moe_grid(problem(1, 1, 8, 8 * 65536)); },
                        "fused_moe: I / 8 (intermediate columns) needs 65536 blocks");
  testing::expect_error([] { cuda::fused_moe_grid(problem(1, 1, 8 * 65536, 8)); },
                        "fused_moe: H / 8 (hidden columns) needs 65536 blocks");
  testing::expect_error([] { cuda::fused_moe_grid(problem(int64_t{1} << 31, 1, 8, 8)); },
                        "fused_moe: T * k (the picks) needs 2147483648 blocks");
}

}  // namespace
}  // namespace kiln
