#pragma once
// A validated kv_cache_write in the plain form both backends take.
#include <cstdint>
#include <string>

#include "kiln/core/tensor_view.h"

namespace kiln {

struct KvCacheProblem {
  std::string op;
  Device device;
  DType dtype = DType::bf16, cache_dtype = DType::bf16;
  int64_t tokens = 0, heads = 0, head_dim = 0, capacity = 0;  // capacity = num_blocks * block_size
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_stride = 0, v_stride = 0;  // token strides, elements
  void* key_cache = nullptr;
  void* value_cache = nullptr;
  const void* slots = nullptr;
  bool slots64 = false;
  const float* scale = nullptr;  // [1] or [heads], e4m3 caches only
  bool scale_per_head = false;
  int32_t* bad_slots = nullptr;
};

}  // namespace kiln
