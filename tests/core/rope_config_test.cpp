// The rope kernel's launch shape (src/cuda/rope/rope_config.h), a pure function, and which
// elements and angles its chunks hold (src/cuda/rope/rope_pairs.h), checked on the host.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cuda/rope/rope_config.h"
#include "cuda/rope/rope_pairs.h"

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

// Every pair of a head is held by exactly one (chunk, j) of the kernel, as the layout defines it
// (NeoX (i, i + R/2), GPT-J (2i, 2i + 1)) with its own angle i; each half-chunk's angles are
// contiguous, as load_angles' vector loads assume.
template <int kW, bool kNeox>
void expect_pairs_covered(int half) {
  namespace rp = cuda::rope_pairs;
  SCOPED_TRACE(::testing::Message()
               << "W " << kW << (kNeox ? " neox" : " gptj") << " R/2 " << half);
  std::vector<int> seen(half, 0);
  const int group = kNeox || kW == 1 ? kW : kW / 2;  // angles loaded as one run
  for (int c = 0; c < half / kW; ++c) {
    for (int j = 0; j < kW; ++j) {
      auto element = [&](int e) {
        return e < kW ? rp::first<kW, kNeox>(c, half) + e : rp::second<kW, kNeox>(c, half) + e - kW;
      };
      const int64_t a = element(rp::elem_a<kW, kNeox>(j)), b = element(rp::elem_b<kW, kNeox>(j));
      const int i = rp::angle<kW, kNeox>(c, j, half);
      ASSERT_GE(i, 0);
      ASSERT_LT(i, half);
      ++seen[i];
      EXPECT_EQ(a, kNeox ? i : 2 * i) << "chunk " << c << " pair " << j;
      EXPECT_EQ(b, kNeox ? i + half : 2 * i + 1) << "chunk " << c << " pair " << j;
      const int run_start = rp::angle<kW, kNeox>(c, j - j % group, half);
      EXPECT_EQ(i, run_start + j % group);
    }
  }
  for (int i = 0; i < half; ++i) EXPECT_EQ(seen[i], 1) << "angle " << i;
}

TEST(RopePairs, ChunksCoverEveryPairOnceInBothLayouts) {
  for (int half : {8, 24, 64}) {
    expect_pairs_covered<8, true>(half);  // bf16/f16 vector path
    expect_pairs_covered<8, false>(half);
    expect_pairs_covered<4, true>(half);  // f32 vector path
    expect_pairs_covered<4, false>(half);
  }
  for (int half : {1, 3, 12, 64}) {  // the scalar path, any R/2
    expect_pairs_covered<1, true>(half);
    expect_pairs_covered<1, false>(half);
  }
}

}  // namespace
}  // namespace kiln
