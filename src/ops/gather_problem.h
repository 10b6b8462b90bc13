#pragma once
// A validated row gather in the plain form both backends take: byte rows.
#include <cstdint>
#include <string>

#include "kiln/core/tensor_view.h"

namespace kiln {

struct GatherRows {
  const void* src = nullptr;
  void* out = nullptr;
  int64_t row_bytes = 0;
  int64_t src_stride_bytes = 0, out_stride_bytes = 0;
};

struct GatherProblem {
  std::string op;
  Device device;
  int64_t n = 0, m = 0;  // source rows, gathered rows
  const void* index = nullptr;
  bool index64 = false;
  int32_t* bad_indices = nullptr;
  GatherRows a, b;  // b.src null for a single gather
};

}  // namespace kiln
