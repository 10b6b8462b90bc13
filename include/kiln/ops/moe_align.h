#pragma once
// Token alignment for the grouped expert GEMMs (issue 5): the contract Kestrel and vLLM share.
//
// topk_ids int32 [T, k]: each token's k global expert ids. expert_map int32 [num_experts] maps a
// global id to a local expert in [0, num_local_experts) or -1 (held by another rank: expert
// parallelism); absent: the identity (num_local_experts = num_experts). Outputs:
// - sorted_token_ids int32 [capacity]: the flat indices t * k + j of the routed entries grouped
//   by local expert (experts ascending, entries in increasing flat index within an expert: a
//   deterministic order), each expert's group padded to a multiple of block_size with the
//   padding value T * k; entries past num_tokens_post_pad are padding too.
// - expert_ids int32 [capacity / block_size]: the local expert of each block of block_size
//   entries; -1 for blocks past num_tokens_post_pad.
// - num_tokens_post_pad int32 [1]: the padded length used.
// capacity = moe_align_capacity(...) = T k + num_local_experts (block_size - 1), a multiple of
// block_size. Entries routed to a non-local expert are dropped; an id outside [0, num_experts)
// is never looked up, dropped, and counted into bad_ids (int32 [1], the caller zeroes it).
// block_size: a power of two in [16, 128]. On a GPU the expert_map's values are checked by the
// kernel (a value outside [-1, num_local_experts) drops the entry and counts it as bad), and
// num_local_experts <= 1024.
#include <cstdint>

#include "kiln/core/core.h"

namespace kiln {

int64_t moe_align_capacity(int64_t tokens, int64_t k, int64_t num_local_experts,
                           int64_t block_size);

void moe_align_block_size(const TensorView& sorted_token_ids, const TensorView& expert_ids,
                          const TensorView& num_tokens_post_pad, const TensorView& bad_ids,
                          const TensorView& topk_ids, int64_t num_experts, int64_t block_size,
                          const TensorView& expert_map, int64_t num_local_experts,
                          Stream stream = nullptr);

}  // namespace kiln
