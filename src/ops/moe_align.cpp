// moe_align_block_size: validate, then group the routed entries by local expert: on the GPU
// (cuda/moe/moe_align.cu) or on the host (the reference).
#include "kiln/ops/moe_align.h"

#include <cstdint>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/check.h"
#include "cuda/moe/moe_align_launch.h"
#include "kiln/core/receipt.h"

namespace kiln {
namespace {

constexpr std::string_view kOp = "moe_align_block_size";

int32_t* int32_out(std::string_view arg, const TensorView& t, int64_t n) {
  check::present(kOp, arg, t);
  check::dtype_in(kOp, arg, t, {DType::i32});
  check::vector_of(kOp, arg, t, n);
  if (n > 1 && t.stride(0) != 1) {
    throw_arg_error(kOp, arg, "a contiguous vector", "stride " + std::to_string(t.stride(0)));
  }
  return static_cast<int32_t*>(t.data);
}

}  // namespace

int64_t moe_align_capacity(int64_t tokens, int64_t k, int64_t num_local_experts,
                           int64_t block_size) {
  const int64_t raw = tokens * k + num_local_experts * (block_size - 1);
  return (raw + block_size - 1) / block_size * block_size;
}

void moe_align_block_size(const TensorView& sorted_token_ids, const TensorView& expert_ids,
                          const TensorView& num_tokens_post_pad, const TensorView& bad_ids,
                          const TensorView& topk_ids, int64_t num_experts, int64_t block_size,
                          const TensorView& expert_map, int64_t num_local_experts, Stream stream) {
  check::present(kOp, "topk_ids", topk_ids);
  check::dtype_in(kOp, "topk_ids", topk_ids, {DType::i32});
  if (topk_ids.rank != 2) throw_arg_error(kOp, "topk_ids", "rank 2 [T, k]", topk_ids.shape_str());
  const int64_t tokens = topk_ids.size(0), k = topk_ids.size(1);
  if (num_experts < 1) {
    throw_arg_error(kOp, "num_experts", ">= 1", std::to_string(num_experts));
  }
  if (block_size < 16 || block_size > 128 || (block_size & (block_size - 1)) != 0) {
    throw_arg_error(kOp, "block_size", "a power of two in [16, 128]", std::to_string(block_size));
  }
  if (!expert_map.defined() && num_local_experts != num_experts) {
    throw_arg_error(kOp, "num_local_experts",
                    "num_experts (" + std::to_string(num_experts) + ") without an expert_map",
                    std::to_string(num_local_experts));
  }
  if (num_local_experts < 1 || num_local_experts > num_experts) {
    throw_arg_error(kOp, "num_local_experts", "in [1, num_experts]",
                    std::to_string(num_local_experts));
  }
  for (const TensorView* t : {&sorted_token_ids, &expert_ids, &num_tokens_post_pad, &bad_ids}) {
    if (t->defined()) check::same_device(kOp, "outputs", *t, topk_ids.device);
  }
  const int64_t capacity = moe_align_capacity(tokens, k, num_local_experts, block_size);
  int32_t* sorted = int32_out("sorted_token_ids", sorted_token_ids, capacity);
  int32_t* blocks = int32_out("expert_ids", expert_ids, capacity / block_size);
  int32_t* post_pad = int32_out("num_tokens_post_pad", num_tokens_post_pad, 1);
  int32_t* bad = check::counter(kOp, "bad_ids", bad_ids, topk_ids.device);
  if (topk_ids.device.is_cuda()) {
    // The map is on the device: its values are checked by the kernel (bad ones counted).
    if (expert_map.defined()) {
      check::same_device(kOp, "expert_map", expert_map, topk_ids.device);
      check::dtype_in(kOp, "expert_map", expert_map, {DType::i32});
      check::vector_of(kOp, "expert_map", expert_map, num_experts);
    }
    if (num_local_experts > 1024) {
      throw_arg_error(kOp, "num_local_experts", "<= 1024 on CUDA",
                      std::to_string(num_local_experts));
    }
    if (capacity > INT32_MAX) {  // the kernel's slot and entry arithmetic is 32-bit
      throw_arg_error(kOp, "topk_ids",
                      "T * k + num_local_experts * (block_size - 1) < 2^31 on CUDA",
                      std::to_string(capacity) + " slots");
    }
    require_cuda_built(kOp, topk_ids.device);
    Receipt receipt{std::string(kOp), "cuda", "", ""};
    if constexpr (kCudaBuilt) {
      const cuda::MoeAlignArgs args{
          static_cast<const int32_t*>(topk_ids.data),
          tokens,
          k,
          topk_ids.stride(0),
          topk_ids.stride(1),
          expert_map.defined() ? static_cast<const int32_t*>(expert_map.data) : nullptr,
          expert_map.defined() ? expert_map.stride(0) : 1,
          static_cast<int>(num_experts),
          static_cast<int>(num_local_experts),
          static_cast<int>(block_size),
          capacity,
          sorted,
          blocks,
          post_pad,
          bad};
      receipt.variant = cuda::moe_align(args, stream);
    }
    record_receipt(std::move(receipt));
    return;
  }
  std::vector<int32_t> map(num_experts);
  for (int64_t e = 0; e < num_experts; ++e) {
    map[e] = expert_map.defined() ? -1 : static_cast<int32_t>(e);
  }
  if (expert_map.defined()) {
    check::same_device(kOp, "expert_map", expert_map, topk_ids.device);
    check::dtype_in(kOp, "expert_map", expert_map, {DType::i32});
    check::vector_of(kOp, "expert_map", expert_map, num_experts);
    for (int64_t e = 0; e < num_experts; ++e) {
      const int32_t m = static_cast<const int32_t*>(expert_map.data)[e * expert_map.stride(0)];
      if (m < -1 || m >= num_local_experts) {
        throw_arg_error(kOp, "expert_map", "values in [-1, num_local_experts)",
                        "expert_map[" + std::to_string(e) + "] = " + std::to_string(m));
      }
      map[e] = m;
    }
  }
  // Each local expert's entries in flat-index order.
  std::vector<std::vector<int32_t>> groups(num_local_experts);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t id = static_cast<const int32_t*>(
          topk_ids.data)[t * topk_ids.stride(0) + j * topk_ids.stride(1)];
      if (id < 0 || id >= num_experts) {
        ++*bad;
        continue;
      }
      if (map[id] >= 0) groups[map[id]].push_back(static_cast<int32_t>(t * k + j));
    }
  }
  const auto padding = static_cast<int32_t>(tokens * k);
  int64_t at = 0;
  for (int64_t e = 0; e < num_local_experts; ++e) {
    const int64_t end =
        at + (static_cast<int64_t>(groups[e].size()) + block_size - 1) / block_size * block_size;
    for (int64_t b = at / block_size; b < end / block_size; ++b)
      blocks[b] = static_cast<int32_t>(e);
    for (size_t i = 0; i < groups[e].size(); ++i) sorted[at + i] = groups[e][i];
    for (int64_t i = at + static_cast<int64_t>(groups[e].size()); i < end; ++i) sorted[i] = padding;
    at = end;
  }
  for (int64_t i = at; i < capacity; ++i) sorted[i] = padding;
  for (int64_t b = at / block_size; b < capacity / block_size; ++b) blocks[b] = -1;
  *post_pad = static_cast<int32_t>(at);
  record_receipt({std::string(kOp), "reference", "host", ""});
}

}  // namespace kiln
