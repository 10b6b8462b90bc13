#pragma once
// A validated rope / rope_backward call in the plain form both backends take.
#include <cstdint>
#include <string>

#include "core/check.h"
#include "kiln/ops/rope.h"

namespace kiln {

// q or k and its output: [T, heads, D], the last dim contiguous, strides in elements.
struct RopeHeads {
  const void* in = nullptr;
  void* out = nullptr;  // == in: in place
  int64_t heads = 0;
  int64_t in_token_stride = 0, in_head_stride = 0;
  int64_t out_token_stride = 0, out_head_stride = 0;
  bool in_place() const { return out == in; }
};

struct RopeProblem {
  std::string op;
  Device device;
  DType dtype = DType::f32;
  RopeLayout layout = RopeLayout::neox;
  bool inverse = false;  // rope_backward: the rotation by -theta
  int64_t tokens = 0, head_dim = 0, rotary_dim = 0, max_position = 0;
  RopeHeads q, k;
  const float* cos_sin = nullptr;  // [max_position, rotary_dim], contiguous
  const int64_t* positions = nullptr;
  int32_t* bad_positions = nullptr;
};

}  // namespace kiln
