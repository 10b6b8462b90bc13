#pragma once
// Launch shapes of the normalization kernels: a pure function of the problem (and the SM count
// for the backward's persistent grid), unit-tested on the host.
//
// A row is handled by `threads_per_row` threads (a multiple of 32), each holding
// `vecs_per_thread` accesses of `vec_width` elements in registers, so the row is read from DRAM
// once. Forward aims at 4 accesses (64 B) per thread and backward at 2 (x and dy both live, plus
// the dweight/dbias accumulators): enough bytes in flight per SM (~20 KB needed by Little's law
// at ~3 TB/s and ~0.7 us loaded latency, notes/memory-bound-sm90.md §1.7) without spilling.
// Forward: a thread aims for one 16-byte access and a row gets up to 512 threads. Measured on the
// H100 (bf16, M = 16384, blocks of 256): aiming for 1, 2, 4, 8 accesses a thread gave 0.051,
// 0.053, 0.059, 0.069 ms at N = 2048 — more threads a row, more rows in flight. Blocks are 512
// threads (__launch_bounds__(512): up to 128 registers), and rows wider than 512 threads x 4
// accesses stream instead (vecs_per_thread = 0): the row is re-read, from L2, for each pass.
// Backward blocks are 512 threads (up to 128 registers): x, dy and the dweight/dbias accumulators
// of up to 2 accesses fit (121 registers for bf16 LayerNorm), and 512 threads a block keep 16 warps
// a SM in flight where 256 threads x 4 accesses (172 registers) kept 8; rows wider than 512 x 2
// accesses stream (4 accesses spilled at 128 registers). ptxas must report no spills for any
// instance.
#include <algorithm>
#include <cstdint>

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

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

inline int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

inline NormConfig norm_row_config(int64_t rows, int64_t cols, int elem_bytes, bool aligned,
                                  int target_vecs_per_thread, int max_vecs_per_thread,
                                  int block_threads) {
  NormConfig c;
  c.vec_width = aligned ? 16 / elem_bytes : 1;
  const int64_t vecs = ceil_div(cols, c.vec_width);
  c.threads_per_row = static_cast<int>(
      std::clamp<int64_t>(next_pow2(ceil_div(vecs, target_vecs_per_thread)), 32, block_threads));
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

inline NormConfig norm_forward_config(int64_t rows, int64_t cols, int elem_bytes, bool aligned,
                                      int target_vecs_per_thread = 1) {
  return norm_row_config(rows, cols, elem_bytes, aligned, target_vecs_per_thread,
                         kNormForwardMaxVecs, kNormForwardThreads);
}

// The backward keeps one dweight/dbias partial per row slot (block x rows_per_block), so the
// grid, and with it the bits of dweight, depends only on (rows, cols, dtype, SM count).
inline NormConfig norm_backward_row_config(int64_t rows, int64_t cols, int elem_bytes,
                                           bool aligned) {
  return norm_row_config(rows, cols, elem_bytes, aligned, 2, kNormBackwardMaxVecs,
                         kNormBackwardThreads);
}

inline NormConfig norm_backward_config(int64_t rows, int64_t cols, int elem_bytes, bool aligned,
                                       int sm_count, int blocks_per_sm) {
  return persistent(norm_backward_row_config(rows, cols, elem_bytes, aligned), rows, sm_count,
                    blocks_per_sm);
}

// Upper bound on backward row slots for any dtype/occupancy: sizes the workspace.
inline int64_t norm_backward_max_slots(int64_t rows, int64_t cols, int sm_count) {
  int64_t most = 1;
  for (int elem_bytes : {2, 4}) {
    for (bool aligned : {false, true}) {
      const NormConfig c = norm_backward_row_config(rows, cols, elem_bytes, aligned);
      const int max_blocks_per_sm = std::max(1, 2048 / c.threads());
      most = std::max(most, std::min<int64_t>(c.grid, int64_t{sm_count} * max_blocks_per_sm) *
                                c.rows_per_block);
    }
  }
  return most;
}

}  // namespace kiln::cuda
