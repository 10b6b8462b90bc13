#pragma once
// The launch shape of the row-wise elementwise kernels (activations, dropout, moe_sum) as plain
// numbers, with no CUDA headers: the host code that sizes a workspace from it (the dropout
// backward's dbias partials) builds without nvcc. row_launch.h turns it into dim3s.
//
// A block of kRowBlockThreads holds rows_per_block rows of threads_per_row threads, each thread
// one access (vec_width elements) a row; blockIdx.x walks the accesses of a row, blockIdx.y (and
// a loop of stride blocks_y * rows_per_block) the rows.
#include <algorithm>
#include <cstdint>

namespace kiln::cuda {

inline constexpr int kRowBlockThreads = 256;

struct RowShape {
  int threads_per_row = 32, rows_per_block = 1;
  int64_t blocks_x = 1, blocks_y = 1;
  // Row slots: the distinct (blockIdx.y, threadIdx.y) pairs, each walking its own rows.
  int64_t row_slots() const { return blocks_y * rows_per_block; }
};

// max_blocks caps blocks_x * blocks_y (at least one row of blocks): kernels that keep a partial
// result per row slot bound their number that way.
// block_threads: the block's size, a power of two from 32 to kRowBlockThreads.
inline RowShape row_shape(int64_t rows, int64_t cols, int vec_width, int64_t max_blocks = 0,
                          int block_threads = kRowBlockThreads) {
  RowShape s;
  const int64_t accesses = (cols + vec_width - 1) / vec_width;
  while (s.threads_per_row < block_threads && s.threads_per_row < accesses) {
    s.threads_per_row *= 2;
  }
  s.rows_per_block = block_threads / s.threads_per_row;
  s.blocks_x = std::max<int64_t>(1, (accesses + s.threads_per_row - 1) / s.threads_per_row);
  int64_t y_cap = 65535;
  if (max_blocks > 0) y_cap = std::clamp<int64_t>(max_blocks / s.blocks_x, 1, y_cap);
  s.blocks_y = std::clamp<int64_t>((rows + s.rows_per_block - 1) / s.rows_per_block, 1, y_cap);
  return s;
}

// Threads for a block that walks one row (a token) at a time, as the kernels that reduce over a
// token do (moe_sum's dweights, mhc_post_mix): a multiple of 32, at most kRowBlockThreads, every
// thread making the same number of accesses where the row allows (7168 bf16 columns: 896
// accesses = 4 x 224).
inline int token_block_threads(int64_t cols, int vec_width) {
  const int64_t accesses = (cols + vec_width - 1) / vec_width;
  if (accesses == 0) return 32;  // C = 0: one warp writes the token's zero dot products
  const int64_t rounds = (accesses + kRowBlockThreads - 1) / kRowBlockThreads;
  const int64_t threads = (accesses + rounds - 1) / rounds;
  return static_cast<int>(std::clamp<int64_t>((threads + 31) / 32 * 32, 32, kRowBlockThreads));
}

}  // namespace kiln::cuda
