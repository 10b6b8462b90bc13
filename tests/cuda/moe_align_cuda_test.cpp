// CUDA moe_align_block_size against the reference, exactly (every output buffer bit for bit):
// T up to 8192 with k = 8 over 256 experts, block sizes 16..128, an expert map with missing
// experts, all tokens to one expert, experts with no tokens, bad ids, T = 1; outputs poisoned.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kiln/ops/moe_align.h"

namespace kiln {
namespace {

using testing::DeviceBuffer;

struct Case {
  int64_t tokens, k, experts, block;
  bool map, one_expert, bad;
  // 0: contiguous ids; 1: rows k + 3 apart (the kernel's strided, dividing path); 2: contiguous
  // but one element past a 16-byte boundary (flat, scalar loads).
  int layout = 0;
  std::string name() const {
    return "T" + std::to_string(tokens) + "_k" + std::to_string(k) + "_E" +
           std::to_string(experts) + "_b" + std::to_string(block) + (map ? "_map" : "") +
           (one_expert ? "_one" : "") + (bad ? "_bad" : "") +
           (layout == 1   ? "_rowpad"
            : layout == 2 ? "_offset"
                          : "");
  }
};

class MoeAlignCuda : public ::testing::TestWithParam<Case> {};

TEST_P(MoeAlignCuda, MatchesReferenceExactly) {
  if (!testing::have_gpu()) GTEST_FAIL() << "no CUDA device: run the GPU tests on a GPU";
  const Case c = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(c.tokens * 7 + c.experts + c.block));
  std::vector<int32_t> ids(c.tokens * c.k);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.experts) - 1);
  for (auto& id : ids) id = c.one_expert ? 3 % static_cast<int32_t>(c.experts) : pick(rng);
  if (c.bad) {
    ids[0] = static_cast<int32_t>(c.experts);
    ids[ids.size() / 2] = -5;
  }
  std::vector<int32_t> map;
  int64_t local = c.experts;
  if (c.map) {  // every third expert held here
    local = 0;
    for (int64_t e = 0; e < c.experts; ++e)
      map.push_back(e % 3 == 0 ? static_cast<int32_t>(local++) : -1);
  }
  const int64_t cap = moe_align_capacity(c.tokens, c.k, local, c.block);
  const Device gpu = Device::cuda(0);
  // The ids as the device sees them: row t at t * row + lead.
  const int64_t row = c.layout == 1 ? c.k + 3 : c.k, lead = c.layout == 2 ? 1 : 0;
  std::vector<int32_t> stored(c.tokens * row + lead, 7);
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t j = 0; j < c.k; ++j) stored[lead + t * row + j] = ids[t * c.k + j];
  }
  DeviceBuffer ids_d(gpu, stored.size() * 4), map_d(gpu, std::max<size_t>(map.size(), 1) * 4),
      sorted_d(gpu, cap * 4), blocks_d(gpu, cap / c.block * 4), post_d(gpu, 4), bad_d(gpu, 4);
  ids_d.upload(stored.data(), stored.size() * 4);
  if (c.map) map_d.upload(map.data(), map.size() * 4);
  sorted_d.fill_nan();
  blocks_d.fill_nan();
  post_d.fill_nan();
  const int32_t zero = 0;
  bad_d.upload(&zero, 4);
  auto view = [](void* p, Device d, int64_t n) { return TensorView(p, DType::i32, d, {n}); };
  moe_align_block_size(
      view(sorted_d.data(), gpu, cap), view(blocks_d.data(), gpu, cap / c.block),
      view(post_d.data(), gpu, 1), view(bad_d.data(), gpu, 1),
      TensorView(static_cast<int32_t*>(ids_d.data()) + lead, DType::i32, gpu,
                 std::vector<int64_t>{c.tokens, c.k}, std::vector<int64_t>{row, 1}),
      c.experts, c.block, c.map ? view(map_d.data(), gpu, c.experts) : TensorView(), local);
  testing::cuda_ok(cudaDeviceSynchronize(), "moe_align_block_size");
  std::vector<int32_t> sorted(cap), blocks(cap / c.block), want_sorted(cap, -9),
      want_blocks(cap / c.block, -9);
  int32_t post = 0, bad = 0, want_post = 0, want_bad = 0;
  sorted_d.download(sorted.data(), cap * 4);
  blocks_d.download(blocks.data(), blocks.size() * 4);
  post_d.download(&post, 4);
  bad_d.download(&bad, 4);
  const Device cpu = Device::cpu();
  moe_align_block_size(view(want_sorted.data(), cpu, cap),
                       view(want_blocks.data(), cpu, cap / c.block), view(&want_post, cpu, 1),
                       view(&want_bad, cpu, 1),
                       TensorView(ids.data(), DType::i32, cpu, {c.tokens, c.k}), c.experts, c.block,
                       c.map ? view(map.data(), cpu, c.experts) : TensorView(), local);
  EXPECT_EQ(post, want_post);
  EXPECT_EQ(bad, want_bad);
  EXPECT_EQ(blocks, want_blocks);
  EXPECT_EQ(sorted, want_sorted);
}

std::vector<Case> sweep() {
  std::vector<Case> cases;
  for (int64_t tokens : {1, 3, 1000, 8192}) {
    for (int64_t block : {16, 64, 128}) {
      cases.push_back({tokens, 8, 256, block, false, false, false});
      cases.push_back({tokens, 8, 256, block, true, false, true});
      cases.push_back({tokens, 2, 8, block, false, true, false});
    }
  }
  cases.push_back({4096, 1, 1024, 16, false, false, true});
  // Around the one-block limit (2048 entries) and the chunk count's cap (64 chunks of 5000
  // entries: segments of 157, not a multiple of 32), and the other id layouts.
  for (int64_t tokens : {256, 257, 40000}) {
    cases.push_back({tokens, 8, 256, 64, false, false, true});
  }
  for (int layout : {1, 2}) {
    for (int64_t tokens : {3, 1000, 8192}) {
      cases.push_back({tokens, 8, 256, 64, true, false, true, layout});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Sweep, MoeAlignCuda, ::testing::ValuesIn(sweep()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name();
                         });

}  // namespace
}  // namespace kiln
