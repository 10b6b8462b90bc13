#pragma once
// CUDA moe_align_block_size: launches for validated arguments; returns the variant name.
#include <cstdint>
#include <string>

#include "kiln/core/stream.h"

namespace kiln::cuda {

// Local experts the kernel's shared-memory tables hold.
inline constexpr int kMoeAlignMaxLocalExperts = 1024;

struct MoeAlignArgs {
  const int32_t* topk_ids;  // [tokens, k] with strides
  int64_t tokens, k, id_stride_t, id_stride_j;
  const int32_t* expert_map;  // [num_experts] or null (identity)
  int64_t expert_map_stride;
  int num_experts, num_local_experts, block_size;
  int64_t capacity;
  int32_t* sorted_token_ids;     // [capacity]
  int32_t* expert_ids;           // [capacity / block_size]
  int32_t* num_tokens_post_pad;  // [1]
  int32_t* bad_ids;              // [1]
};

// How the entries are split over blocks. Every block counts all the entries (so no workspace and
// no second launch are needed for the per-expert offsets) and places one chunk of them, so the
// redundant counting grows with chunks * entries: chunks of at least kMoeAlignMinChunk entries,
// and at most kMoeAlignMaxChunks of them. 8192 tokens x 8: 32 chunks of 2048 (each block counts
// 64 Ki ids, 256 KiB of L2 reads, ~2 us; it places 2048). Up to 2048 entries: one block.
inline constexpr int64_t kMoeAlignMinChunk = 2048, kMoeAlignMaxChunks = 64;

struct MoeAlignPlan {
  int64_t chunks = 1, chunk = 0;  // chunk: entries a block places (the last may place fewer)
};

inline MoeAlignPlan moe_align_plan(int64_t entries) {
  MoeAlignPlan p;
  p.chunks = (entries + kMoeAlignMinChunk - 1) / kMoeAlignMinChunk;
  if (p.chunks < 1) p.chunks = 1;
  if (p.chunks > kMoeAlignMaxChunks) p.chunks = kMoeAlignMaxChunks;
  p.chunk = (entries + p.chunks - 1) / p.chunks;
  return p;
}

std::string moe_align(const MoeAlignArgs& a, Stream stream);

}  // namespace kiln::cuda
