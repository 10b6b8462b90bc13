// moe_align_block_size against the contract: a hand-worked routing (grouping, padding, the block
// experts), expert parallelism (non-local experts dropped), ids out of range counted, an expert
// that receives nothing, all tokens to one expert, and the bad inputs.
#include <gtest/gtest.h>

#include <vector>

#include "common/expect_error.h"
#include "cuda/moe/moe_align_launch.h"
#include "kiln/ops/moe_align.h"

namespace kiln {
namespace {

struct Aligned {
  std::vector<int32_t> sorted, blocks;
  int32_t post_pad = -1, bad = 0;
};

TensorView vec(std::vector<int32_t>& v) {
  return TensorView(v.data(), DType::i32, Device::cpu(), {static_cast<int64_t>(v.size())});
}

Aligned align(std::vector<int32_t> ids, int64_t k, int64_t experts, int64_t block,
              std::vector<int32_t> map = {}, int64_t local = 0) {
  const int64_t tokens = static_cast<int64_t>(ids.size()) / k;
  if (local == 0) local = experts;
  const int64_t cap = moe_align_capacity(tokens, k, local, block);
  Aligned a{std::vector<int32_t>(cap, -7), std::vector<int32_t>(cap / block, -7)};
  moe_align_block_size(vec(a.sorted), vec(a.blocks),
                       TensorView(&a.post_pad, DType::i32, Device::cpu(), {1}),
                       TensorView(&a.bad, DType::i32, Device::cpu(), {1}),
                       TensorView(ids.data(), DType::i32, Device::cpu(), {tokens, k}), experts,
                       block, map.empty() ? TensorView() : vec(map), local);
  return a;
}

TEST(MoeAlign, GroupsPadsAndLabelsBlocks) {
  // 3 tokens, k = 2, 3 experts, block 16: expert 0 gets entries 1, 4; expert 1 nothing; expert 2
  // gets 0, 2, 3, 5.
  const Aligned a = align({2, 0, 2, 2, 0, 2}, 2, 3, 16);
  EXPECT_EQ(a.post_pad, 32);
  ASSERT_EQ(a.sorted.size(), size_t(64));  // 6 + 3 * 15 = 51, rounded up to a block
  EXPECT_EQ(std::vector<int32_t>(a.sorted.begin(), a.sorted.begin() + 2),
            (std::vector<int32_t>{1, 4}));
  for (int i = 2; i < 16; ++i) EXPECT_EQ(a.sorted[i], 6) << i;  // padding = T * k
  EXPECT_EQ(std::vector<int32_t>(a.sorted.begin() + 16, a.sorted.begin() + 20),
            (std::vector<int32_t>{0, 2, 3, 5}));
  for (size_t i = 20; i < a.sorted.size(); ++i) EXPECT_EQ(a.sorted[i], 6) << i;
  EXPECT_EQ(a.blocks, (std::vector<int32_t>{0, 2, -1, -1}));
  EXPECT_EQ(a.bad, 0);
}

TEST(MoeAlign, ExpertParallelismDropsNonLocalExperts) {
  // Experts 0..3 global; this rank holds 1 -> local 0 and 3 -> local 1.
  const Aligned a = align({0, 1, 3, 1, 2, 3}, 2, 4, 16, {-1, 0, -1, 1}, 2);
  EXPECT_EQ(a.post_pad, 32);
  EXPECT_EQ(std::vector<int32_t>(a.sorted.begin(), a.sorted.begin() + 2),
            (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(std::vector<int32_t>(a.sorted.begin() + 16, a.sorted.begin() + 18),
            (std::vector<int32_t>{2, 5}));
  EXPECT_EQ(a.blocks[0], 0);
  EXPECT_EQ(a.blocks[1], 1);
}

TEST(MoeAlign, AllTokensToOneExpertAndBadIds) {
  std::vector<int32_t> ids(40, 1);
  ids[7] = 9;   // past num_experts
  ids[8] = -2;  // negative
  const Aligned a = align(ids, 1, 2, 16);
  EXPECT_EQ(a.bad, 2);
  EXPECT_EQ(a.post_pad, 48);  // 38 entries -> 3 blocks
  EXPECT_EQ(a.blocks[0], 1);
  EXPECT_EQ(a.blocks[2], 1);
  EXPECT_EQ(a.sorted[7], 9);  // entries 0..6, then 9 (7 and 8 dropped)
}

TEST(MoeAlign, BadInput) {
  std::vector<int32_t> ids{0, 1}, out(32), blocks(2), wrong(64);
  int32_t post = 0, bad = 0;
  auto call = [&](int64_t block, int64_t local, std::vector<int32_t> map,
                  std::vector<int32_t>* sorted = nullptr) {
    moe_align_block_size(vec(sorted ? *sorted : out), vec(blocks),
                         TensorView(&post, DType::i32, Device::cpu(), {1}),
                         TensorView(&bad, DType::i32, Device::cpu(), {1}),
                         TensorView(ids.data(), DType::i32, Device::cpu(), {1, 2}), 2, block,
                         map.empty() ? TensorView() : vec(map), local);
  };
  testing::expect_error([&] { call(24, 2, {}); },
                        "moe_align_block_size: argument 'block_size': expected a power of two in "
                        "[16, 128], got 24");
  testing::expect_error([&] { call(16, 1, {}); },
                        "argument 'num_local_experts': expected num_experts (2) without an "
                        "expert_map, got 1");
  testing::expect_error(
      [&] {
        call(16, 1, {0, 1});
      },
      "argument 'expert_map': expected values in [-1, num_local_experts), got "
      "expert_map[1] = 1");
  // capacity(T = 1, k = 2, 2 local experts, 16) = 2 + 30 = 32.
  testing::expect_error([&] { call(16, 2, {}, &wrong); },
                        "argument 'sorted_token_ids': expected shape [32], got shape [64]");
}

// The CUDA kernel's split of the entries over blocks (a host-side function): one block up to
// 2048 entries, chunks of at least 2048 after that, at most 64 of them, covering every entry.
TEST(MoeAlign, CudaPlanCoversTheEntries) {
  using cuda::moe_align_plan;
  EXPECT_EQ(moe_align_plan(0).chunks, 1);
  EXPECT_EQ(moe_align_plan(128).chunks, 1);
  EXPECT_EQ(moe_align_plan(2048).chunks, 1);
  EXPECT_EQ(moe_align_plan(2049).chunks, 2);
  EXPECT_EQ(moe_align_plan(8192 * 8).chunks, 32);
  EXPECT_EQ(moe_align_plan(8192 * 8).chunk, 2048);
  EXPECT_EQ(moe_align_plan(40000 * 8).chunks, 64);
  for (int64_t n : {1, 2047, 2049, 65536, 320000, 1 << 24}) {
    const cuda::MoeAlignPlan p = moe_align_plan(n);
    EXPECT_GE(p.chunks * p.chunk, n) << n;
    EXPECT_LT((p.chunks - 1) * p.chunk, n) << n;  // no empty block
  }
}

}  // namespace
}  // namespace kiln
