#pragma once
// The dropout backward's dbias partial sums, as plain numbers (no CUDA headers: the workspace
// size is asked for in builds without nvcc too). The backward kernel keeps one fp32 partial row
// of dbias per row slot, so the slots are capped: kDbiasMaxBlocks blocks are about one full wave
// on an H100 (132 SMs x 8 blocks of 256 threads), and each slot row costs 4 bytes a column to
// write and fold (at 16384 x 8192 bf16, 256 slots: 8 MB next to 537 MB of dout and dx).
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "cuda/common/row_shape.h"

namespace kiln::cuda {

inline constexpr int64_t kDbiasMaxBlocks = 1024;

inline RowShape dropout_dbias_shape(int64_t rows, int64_t cols, int vec_width) {
  return row_shape(rows, cols, vec_width, kDbiasMaxBlocks);
}

// Bytes of fp32 partials for either access width the launcher may pick.
inline size_t dropout_backward_workspace_bytes(int64_t rows, int64_t cols, int elem_bytes) {
  int64_t slots = 0;
  for (int width : {1, 16 / elem_bytes}) {
    slots = std::max(slots, dropout_dbias_shape(rows, cols, width).row_slots());
  }
  return static_cast<size_t>(slots * cols) * sizeof(float);
}

}  // namespace kiln::cuda
