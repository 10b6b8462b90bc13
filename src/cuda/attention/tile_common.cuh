#pragma once
// Pieces the attention kernels share: the CTA shape, the swizzled shared-memory layout, MUFU
// exp2, and the tile lookup that needs no host copy of cu_seqlens.
#include <cstdint>

#include "cuda/attention/attention_launch.h"

namespace kiln::cuda::attention_tiles {

constexpr int kWarps = 4, kThreads = 32 * kWarps;

// Shared-memory index of element (row, col) of a row-major tile of `width` 16-bit elements, its
// 16-byte chunks XOR-swizzled by the row so the 8 rows an ldmatrix reads hit 8 bank groups.
template <int kWidth>
__device__ __forceinline__ int swizzled(int row, int col) {
  return row * kWidth + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

// The (sequence, query tile) of tile slot `slot` (key tiles with kByKeys), or sequence -1 when the
// slot is past the last tile. A sequence's tiles are handed out last first, so under a causal mask
// the tiles with the most keys are scheduled first and the light ones fill the tail of the grid.
// Sequences with bad metadata have no tiles; the reporter CTA counts them.
struct TileSlot {
  int sequence, m_block;
};

template <int kBlock, bool kByKeys = false>
__device__ TileSlot find_tile(const AttentionForwardArgs& a, int slot, bool reporter) {
  __shared__ int found[2], warp_total[kWarps];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  if (tid == 0) found[0] = -1;
  int bad = 0;
  if (reporter && tid == 0) {
    if (a.cu_q[0] != 0 || a.cu_q[a.batch] != a.total_q) ++bad;
    if (a.cu_k[0] != 0 || (!a.block_table && a.cu_k[a.batch] != a.total_k)) ++bad;
  }
  int before = 0;
  for (int base = 0; base < a.batch; base += kThreads) {
    const int b = base + tid;
    int tiles = 0;
    if (b < a.batch) {
      const int q0 = a.cu_q[b], q1 = a.cu_q[b + 1], k0 = a.cu_k[b], k1 = a.cu_k[b + 1];
      bool ok = q0 >= 0 && q0 <= q1 && q1 <= a.total_q && k0 >= 0 && k0 <= k1 && k1 <= a.total_k;
      if (ok && a.valid_q) ok = a.valid_q[b] >= 0 && a.valid_q[b] <= q1 - q0;
      if (ok && a.valid_k) ok = a.valid_k[b] >= 0 && a.valid_k[b] <= k1 - k0;
      if (ok) tiles = ((kByKeys ? k1 - k0 : q1 - q0) + kBlock - 1) / kBlock;
      bad += !ok;
      if (ok && reporter && a.block_table) {  // every page the sequence's keys need
        const int pages = (k1 - k0 + (1 << a.page_shift) - 1) >> a.page_shift;
        bad += pages > a.max_pages;
        for (int p = 0; p < min(pages, a.max_pages); ++p) {
          const int id = a.block_table[b * a.table_stride + p];
          bad += id < 0 || id >= a.num_pages;
        }
      }
    }
    int inclusive = tiles;  // block-wide inclusive scan of the tile counts
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(~0u, inclusive, o);
      if (lane >= o) inclusive += v;
    }
    if (lane == 31) warp_total[warp] = inclusive;
    __syncthreads();
    int chunk = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) inclusive += warp_total[w];
      chunk += warp_total[w];
    }
    const int first = before + inclusive - tiles;
    if (tiles > 0 && slot >= first && slot < first + tiles) {
      found[0] = b;
      found[1] =
          tiles - 1 - (slot - first);  // last tile first: the longest causal rows start early
    }
    before += chunk;
    __syncthreads();
    if (found[0] >= 0 && !reporter) break;
    __syncthreads();  // warp_total is rewritten by the next chunk
  }
  if (reporter && a.bad_metadata) {
    for (int o = 16; o > 0; o >>= 1) bad += __shfl_xor_sync(~0u, bad, o);
    if (lane == 0 && bad) atomicAdd(a.bad_metadata, bad);
  }
  __syncthreads();
  return {found[0], found[1]};
}

// 2^x on the MUFU unit (ex2.approx, -inf -> 0): what --use_fast_math makes of exp2f.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace kiln::cuda::attention_tiles
