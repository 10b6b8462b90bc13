#pragma once
// Launch shape shared by the row-wise elementwise kernels (activations, dropout, moe_sum): a
// block of kRowBlockThreads holds rows_per_block rows of threads_per_row threads, each thread one
// access (vec_width elements) a row; blockIdx.x walks the accesses of a row, blockIdx.y (and a
// loop of stride gridDim.y * rows_per_block) the rows.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "core/check.h"

namespace kiln::cuda {

inline constexpr int kRowBlockThreads = 256;

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

inline RowLaunch row_launch(int64_t rows, int64_t cols, int vec_width) {
  RowLaunch l;
  const int64_t accesses = (cols + vec_width - 1) / vec_width;
  while (l.threads_per_row < kRowBlockThreads && l.threads_per_row < accesses) {
    l.threads_per_row *= 2;
  }
  l.rows_per_block = kRowBlockThreads / l.threads_per_row;
  l.block = dim3(l.threads_per_row, l.rows_per_block);
  const int64_t blocks_x =
      std::max<int64_t>(1, (accesses + l.threads_per_row - 1) / l.threads_per_row);
  const int64_t blocks_y =
      std::clamp<int64_t>((rows + l.rows_per_block - 1) / l.rows_per_block, 1, 65535);
  l.grid = dim3(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y));
  return l;
}

}  // namespace kiln::cuda
