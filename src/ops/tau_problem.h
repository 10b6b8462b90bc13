#pragma once
// A validated tau_tail call in the plain form both backends take.
#include <cstdint>
#include <string>

#include "core/check.h"

namespace kiln {

struct TauProblem {
  std::string op;
  Device device;
  DType dtype = DType::f32, tok_dtype = DType::f32, tau_dtype = DType::f32;
  int64_t tokens = 0, heads = 0, head_dim = 0, table_rows = 0;
  check::RowMatrix qkv;         // [T, 3 H D]
  check::RowMatrix tok;         // [T, 2 H]
  const void* table = nullptr;  // [P, H] contiguous
  const void* positions = nullptr;
  bool positions64 = false;
  int32_t* bad_positions = nullptr;
};

}  // namespace kiln
