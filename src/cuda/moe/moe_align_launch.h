#pragma once
// CUDA moe_align_block_size: launches for validated arguments; returns the variant name.
#include <cstdint>
#include <string>

#include "kiln/core/stream.h"

namespace kiln::cuda {

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

std::string moe_align(const MoeAlignArgs& a, Stream stream);

}  // namespace kiln::cuda
