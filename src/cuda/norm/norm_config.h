#pragma once
// Launch shapes of the normalization kernels: a pure function of the problem (and the SM count
// and measured occupancy for the backward's persistent grid), unit-tested on the host.
//
// A row is handled by `threads_per_row` threads (a power of two >= 32), each holding
// `vecs_per_thread` accesses of `vec_width` elements in registers, so the row is read from DRAM
// once; rows too wide for that stream (vecs_per_thread = 0) and re-read from L2 per pass.
// Measured on the H100 (bf16, M = 16384, N = 2048-8192; bench/results/2026-11-22-norm-h100-v2):
// - Forward: one row group a block (not persistent); see norm_forward_config for its shapes.
//   The kernels are issue-bound (ncu: ~0.8 warps issued a scheduler cycle), so more rows in
//   flight and fewer instructions a row are what count.
// - Backward: persistent, 512-thread blocks, the next row staged in shared memory; RMSNorm aims
//   at 1 access a thread (64 registers, 2 blocks a SM), LayerNorm at 2 (1 measured slower, s12).
//   Up to 2 accesses (4 spilled at 128 registers).
#include <algorithm>
#include <cstdint>

#include "core/int_math.h"

namespace kiln::cuda {

struct NormConfig {
  int vec_width = 1;  // elements per access: 16 / element bytes when aligned, else 1
  int threads_per_row = 32;
  int rows_per_block = 1;
  int vecs_per_thread = 1;  // 1, 2, 4 or 8; 0 = streaming
  int64_t grid = 1;         // blocks
  int threads() const { return threads_per_row * rows_per_block; }
};

inline constexpr int kNormForwardThreads = 512;
inline constexpr int kNormBackwardThreads = 512;
inline constexpr int kNormForwardMaxVecs = 4;
inline constexpr int kNormBackwardMaxVecs = 2;
// Rows a persistent block has in its shared-memory ring: the one being worked on and
// kNormStages - 1 in flight behind it.
// Measured on the H100 (bf16, M = 16384): 3 and 4 stages were no faster than 2 in the
// backward, and a persistent staged forward was slower than one block per row group.
inline constexpr int kNormStages = 2;

inline int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// block_threads: the threads of a block's rows; a row wider than that takes up to
// max_threads_per_row (default block_threads) in a block of its own.
inline NormConfig norm_row_config(int64_t rows, int64_t cols, int elem_bytes, bool aligned,
                                  int target_vecs_per_thread, int max_vecs_per_thread,
                                  int block_threads, int max_threads_per_row = 0) {
  NormConfig c;
  c.vec_width = aligned ? 16 / elem_bytes : 1;
  const int64_t vecs = ceil_div(cols, c.vec_width);
  const int tpr_cap = max_threads_per_row > 0 ? max_threads_per_row : block_threads;
  c.threads_per_row = static_cast<int>(
      std::clamp<int64_t>(next_pow2(ceil_div(vecs, target_vecs_per_thread)), 32, tpr_cap));
  const int64_t per_thread = ceil_div(vecs, c.threads_per_row);
  c.vecs_per_thread =
      per_thread > max_vecs_per_thread ? 0 : static_cast<int>(next_pow2(per_thread));
  c.rows_per_block = std::max(1, block_threads / c.threads_per_row);
  c.grid = std::max<int64_t>(1, ceil_div(rows, c.rows_per_block));
  return c;
}

// The backward runs a persistent grid: each block walks rows blockIdx, blockIdx + grid, ... (so
// dweight/dbias accumulate in registers and the next row is staged while one is worked on). Up
// to `blocks_per_sm` blocks a SM; the launcher passes the occupancy it measured.
inline NormConfig persistent(NormConfig c, int64_t rows, int sm_count, int blocks_per_sm) {
  c.grid = std::max<int64_t>(
      1, std::min<int64_t>(ceil_div(rows, c.rows_per_block),
                           int64_t{std::max(1, sm_count)} * std::max(1, blocks_per_sm)));
  return c;
}

// Forward: a row of up to 256 16-byte accesses gets one access a thread, a wider row two (up to
// 512 threads a row; past that more accesses, then streaming), and a block holds 256 threads of
// rows (or one row, if wider). Measured in the norm lab on the H100 (bf16, M = 16384, s9): at
// N = 2048 one row a 256-thread block took LayerNorm from 0.0542 to 0.0506 ms (two rows a
// 512-thread block before); at N = 4096, 256 threads x 2 accesses took it from 0.0990 to 0.0956.
// target_vecs_per_thread 0 picks that; the lab knobs KILN_DEV_NORM_FWD_VECS / _BLOCK override it.
inline constexpr int kNormForwardBlockThreads = 256;
inline NormConfig norm_forward_config(int64_t rows, int64_t cols, int elem_bytes, bool aligned,
                                      int target_vecs_per_thread = 0,
                                      int block_threads = kNormForwardBlockThreads) {
  const int64_t vecs = ceil_div(cols, aligned ? 16 / elem_bytes : 1);
  const int target = target_vecs_per_thread > 0 ? target_vecs_per_thread : vecs <= 256 ? 1 : 2;
  return norm_row_config(rows, cols, elem_bytes, aligned, target, kNormForwardMaxVecs,
                         std::min(block_threads, kNormForwardThreads), kNormForwardThreads);
}

// The backward keeps one dweight/dbias partial per row slot (block x rows_per_block), so the
// grid, and with it the bits of dweight, depends only on (rows, cols, dtype, SM count).
inline NormConfig norm_backward_row_config(int64_t rows, int64_t cols, int elem_bytes, bool aligned,
                                           int target_vecs_per_thread = 2) {
  return norm_row_config(rows, cols, elem_bytes, aligned, target_vecs_per_thread,
                         kNormBackwardMaxVecs, kNormBackwardThreads);
}

inline NormConfig norm_backward_config(int64_t rows, int64_t cols, int elem_bytes, bool aligned,
                                       int sm_count, int blocks_per_sm,
                                       int target_vecs_per_thread = 2) {
  return persistent(
      norm_backward_row_config(rows, cols, elem_bytes, aligned, target_vecs_per_thread), rows,
      sm_count, blocks_per_sm);
}

// Upper bound on backward row slots for any dtype, target and occupancy: sizes the workspace.
inline int64_t norm_backward_max_slots(int64_t rows, int64_t cols, int sm_count) {
  int64_t most = 1;
  for (int elem_bytes : {2, 4}) {
    for (bool aligned : {false, true}) {
      for (int target = 1; target <= kNormBackwardMaxVecs; target *= 2) {
        const NormConfig c = norm_backward_row_config(rows, cols, elem_bytes, aligned, target);
        const int max_blocks_per_sm = std::max(1, 2048 / c.threads());
        most = std::max(most, std::min<int64_t>(c.grid, int64_t{sm_count} * max_blocks_per_sm) *
                                  c.rows_per_block);
      }
    }
  }
  return most;
}

}  // namespace kiln::cuda
