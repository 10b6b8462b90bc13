#pragma once
// Launch shape shared by the row-wise elementwise kernels (activations, dropout, moe_sum): the
// dim3s of row_shape.h's RowShape, and the 16-byte-path test.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "core/check.h"
#include "cuda/common/row_shape.h"

namespace kiln::cuda {

// The 16-byte path needs N, every row stride and every pointer to fit whole vectors of `width`
// elements; absent matrices (null data) do not count.
inline bool rows_vector_aligned(int64_t cols, int width,
                                std::initializer_list<const check::RowMatrix*> matrices) {
  bool ok = cols % width == 0;
  for (const check::RowMatrix* m : matrices) {
    if (m->data == nullptr) continue;
    ok = ok && reinterpret_cast<uintptr_t>(m->data) % 16 == 0 &&
         (m->rows <= 1 || m->row_stride % width == 0);
  }
  return ok;
}

struct RowLaunch {
  dim3 grid, block;
  int threads_per_row = 32, rows_per_block = 1;
};

inline RowLaunch row_launch(int64_t rows, int64_t cols, int vec_width, int64_t max_blocks = 0,
                            int block_threads = kRowBlockThreads) {
  const RowShape s = row_shape(rows, cols, vec_width, max_blocks, block_threads);
  RowLaunch l;
  l.threads_per_row = s.threads_per_row;
  l.rows_per_block = s.rows_per_block;
  l.block = dim3(s.threads_per_row, s.rows_per_block);
  l.grid = dim3(static_cast<unsigned>(s.blocks_x), static_cast<unsigned>(s.blocks_y));
  return l;
}

}  // namespace kiln::cuda
