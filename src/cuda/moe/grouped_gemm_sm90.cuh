#pragma once
// Grouped expert GEMM on wgmma + TMA (sm_90a), the building block of the prefill MoE path
// (DeepGEMM's "contiguous" layout, shared/notes/moe-sm90.md): the routed rows are first permuted
// into expert-contiguous blocks of 128 (moe_align_block_size's order, padding rows included), so
// both operands are plain tiles TMA can load.
//
//   out[r, :] = epilogue(A[r, :] · B[e(r)]ᵀ),  e(r) = block_expert[r / 128]
//
// A [rows, K] and B [E, N, K] bf16/f16 (K contiguous, 16-byte aligned rows). One CTA = 128 rows
// x kBlockN (128 or 256) B rows: two consumer warpgroups of 64 rows (one m64nkBlockNk16 wgmma per
// k16 step) and a producer warp streaming 64-column K slices of A and B through a 4-stage mbarrier
// ring. 256-wide tiles read A from L2 half as often and issue half as many wgmmas per FLOP, which
// is what keeps the weight-streaming prefill GEMMs fed (shared/notes/moe-sm90.md). Epilogues:
// - plain: out [rows, N] = acc (· row_scale[r]), optionally an activation of one input (relu2);
// - gated: B's first N/2 rows are the gate, the rest the up projection; out [rows, N/2] =
//   act(gate, up) (· row_scale[r]); a CTA covers kBlockN / 2 gate and the matching up rows.
// Blocks whose expert is < 0 (not held here) or that start at or past *rows_used are skipped:
// their rows are not written; nor are the rows of a block at or past its block_rows count.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/common/mma.cuh"
#include "cuda/common/tma.cuh"
#include "cuda/common/wgmma.cuh"
#include "ops/activation_math.h"

namespace kiln::cuda::grouped_gemm {

constexpr int kBlockM = 128, kBlockK = 64;
constexpr int kConsumerWarps = 8, kThreads = 32 * (kConsumerWarps + 1);
constexpr int kRowBytes = 128;                    // one swizzled row: 64 16-bit elements
constexpr int kATileBytes = kBlockM * kRowBytes;  // A slice of one stage (16 KB)

// A tile shape: B rows per CTA, ring depth, CTAs meant to share an SM (two CTAs of 3 stages of
// 128-wide tiles fit the SM's shared memory, so one's epilogue overlaps the other's main loop).
template <int kN, int kStageCount, int kCtas>
struct Tile {
  static constexpr int kBlockN = kN, kStages = kStageCount, kCtasPerSm = kCtas;
  static constexpr int kBTileBytes = kBlockN * kRowBytes;
  static constexpr int kSmemBytes = 1024 + kStages * (kATileBytes + kBTileBytes);
};
using Tile128 = Tile<128, 4, 1>;
using Tile128x2 = Tile<128, 3, 2>;
using Tile256 = Tile<256, 4, 1>;

struct GroupedGemmArgs {
  CUtensorMap a, b;  // A as (K, rows, 1) in 64 x 128 boxes; B as (K, N, E) in 64 x box_n boxes
  const int32_t* block_expert = nullptr;  // [ceil(rows / 128)]
  const int32_t* block_rows = nullptr;    // [ceil(rows / 128)] rows in use per block, or null
  const int32_t* rows_used = nullptr;     // device scalar, or null (all rows)
  const float* row_scale = nullptr;       // [rows], or null
  void* out = nullptr;
  int64_t out_stride = 0;  // elements between rows of out
  int64_t rows = 0, n = 0, k = 0;
  int m_blocks = 0, n_tiles = 0;  // the grid is m_blocks * n_tiles CTAs (tile_of)
  act::Kind kind = act::Kind::swiglu;
  bool activate = false;  // plain epilogue: act(acc, 0)
};

// The (row block, column tile) of CTA `linear`, computed by one warp. CTAs are ordered by runs
// of row blocks that share an expert, in chunks of at most kRunChunk blocks; inside a chunk the
// row block varies fastest. So the CTAs that read the same expert's B tile run side by side and
// share it through L2, and a chunk's A rows (at most 8 x 128 rows) stay in L2 across its column
// tiles. Ordered by column tile alone, B came from DRAM about twice over (ncu: 33 GB of DRAM
// traffic for 15 GB of w13 at DeepSeek-V3's prefill shape).
constexpr int kRunChunk = 8;

__device__ __forceinline__ int2 tile_of(const GroupedGemmArgs& g, int64_t linear, int lane) {
  const int b = static_cast<int>(linear / g.n_tiles);
  const int used = g.rows_used != nullptr
                       ? static_cast<int>((int64_t{*g.rows_used} + kBlockM - 1) / kBlockM)
                       : g.m_blocks;
  const int limit = min(used, g.m_blocks);
  if (b >= limit) return make_int2(b, static_cast<int>(linear % g.n_tiles));  // skipped anyway
  const int expert = g.block_expert[b];
  int first = b;  // the run's first block: step back 32 blocks a time while all match
  for (;;) {
    const int at = first - 1 - lane;
    const unsigned differs = __ballot_sync(~0u, at < 0 || g.block_expert[at] != expert);
    if (differs != 0) {
      first -= __ffs(differs) - 1;
      break;
    }
    first -= 32;
  }
  first += (b - first) / kRunChunk * kRunChunk;
  const int at = first + lane;
  const bool same = lane < kRunChunk && at < limit && g.block_expert[at] == expert;
  const int count = __ffs(__ballot_sync(~0u, !same)) - 1;
  const int64_t local = linear - int64_t{first} * g.n_tiles;
  return make_int2(first + static_cast<int>(local % count), static_cast<int>(local / count));
}

template <typename T, bool kGated, typename Cfg>
__global__ void __launch_bounds__(kThreads, Cfg::kCtasPerSm)
    grouped_gemm_kernel(const __grid_constant__ GroupedGemmArgs g) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kBlockN = Cfg::kBlockN, kStages = Cfg::kStages;
  constexpr int kBTileBytes = Cfg::kBTileBytes;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* const smem = smem_raw + ((1024 - shared_address(smem_raw) % 1024) % 1024);
  uint8_t* const s_a = smem;                          // [kStages][128 rows][128 B]
  uint8_t* const s_b = smem + kStages * kATileBytes;  // [kStages][kBlockN rows][128 B]
  __shared__ uint64_t full[kStages], empty[kStages];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  __shared__ int2 s_tile;
  if (warp == 0) {
    const int2 tile = tile_of(g, blockIdx.x, lane);
    if (lane == 0) s_tile = tile;
  }
  __syncthreads();
  const int m_block = s_tile.x, n_block = s_tile.y;
  const int64_t m0 = int64_t{m_block} * kBlockM;
  if (g.rows_used != nullptr && m0 >= *g.rows_used) return;
  const int expert = g.block_expert[m_block];
  if (expert < 0) return;
  // Rows at or past block_rows are not written; a warpgroup with none of its 64 rows in use runs
  // no wgmma (the last block of each expert is often less than half full).
  const int block_rows = g.block_rows != nullptr ? g.block_rows[m_block] : kBlockM;
  if (block_rows <= 0) return;
  const int k_blocks = static_cast<int>((g.k + kBlockK - 1) / kBlockK);

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      barrier_init(&full[s], 1);
      barrier_init(&empty[s], kConsumerWarps);
    }
    barrier_init_fence();
  }
  __syncthreads();

  if (warp == kConsumerWarps) {  // the producer
    if (lane != 0) return;
    prefetch_tensor_map(&g.a);
    prefetch_tensor_map(&g.b);
    for (int kb = 0; kb < k_blocks; ++kb) {
      const int s = kb % kStages;
      const uint32_t phase = (kb / kStages) & 1;
      barrier_wait_parity(&empty[s], phase ^ 1);
      barrier_arrive_expect_tx(&full[s], kATileBytes + kBTileBytes);
      tma_load_3d(s_a + s * kATileBytes, &g.a, kb * kBlockK, static_cast<int>(m0), 0, &full[s]);
      uint8_t* const b_tile = s_b + s * kBTileBytes;
      if constexpr (kGated) {  // kBlockN / 2 gate rows, then the matching up rows
        constexpr int kHalf = kBlockN / 2;
        const int half = static_cast<int>(g.n / 2);
        tma_load_3d(b_tile, &g.b, kb * kBlockK, kHalf * n_block, expert, &full[s]);
        tma_load_3d(b_tile + kHalf * kRowBytes, &g.b, kb * kBlockK, half + kHalf * n_block, expert,
                    &full[s]);
      } else {
        tma_load_3d(b_tile, &g.b, kb * kBlockK, kBlockN * n_block, expert, &full[s]);
      }
    }
    return;
  }

  // Consumers: warpgroup wg owns rows m0 + 64 wg ..; this thread rows row0 + 8 h.
  const int wg = warp / 4;
  const bool active = 64 * wg < block_rows;
  float acc[kBlockN / 2];
#pragma unroll
  for (int i = 0; i < kBlockN / 2; ++i) acc[i] = 0.f;
  // One k-slice batch stays in flight: after issuing slice kb, wait for kb - 1 and free its stage.
  // An idle warpgroup only frees stages; its loop is a separate one because a wgmma under a
  // branch inside the loop made ptxas serialise every wgmma (C7515).
  if (active) {
    for (int kb = 0; kb < k_blocks; ++kb) {
      const int s = kb % kStages;
      const uint32_t a_base = shared_address(s_a + s * kATileBytes) + 64 * wg * kRowBytes;
      const uint32_t b_base = shared_address(s_b + s * kBTileBytes);
      barrier_wait_parity(&full[s], (kb / kStages) & 1);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBlockK / 16; ++kk) {
        wgmma_ss<T, kBlockN, 0>(acc, sw128_descriptor(a_base + 32 * kk, 16, 1024),
                                sw128_descriptor(b_base + 32 * kk, 16, 1024), true);
      }
      wgmma_commit();
      wgmma_wait<1>();
      if (kb > 0 && lane == 0) barrier_arrive(&empty[(kb - 1) % kStages]);
    }
    wgmma_wait<0>();
  } else {
    for (int kb = 0; kb < k_blocks; ++kb) {
      barrier_wait_parity(&full[kb % kStages], (kb / kStages) & 1);
      if (kb > 0 && lane == 0) barrier_arrive(&empty[(kb - 1) % kStages]);
    }
  }
  fence_accumulators(acc);

  const int64_t row0 = m0 + 64 * wg + 16 * (warp % 4) + lane / 4;
  T* const out = static_cast<T*>(g.out);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t r = row0 + 8 * h;
    if (r >= g.rows || r - m0 >= block_rows) continue;
    const float scale = g.row_scale != nullptr ? g.row_scale[r] : 1.f;
    T* const out_row = out + r * g.out_stride;
    if constexpr (kGated) {
      const int64_t half = g.n / 2;
#pragma unroll
      for (int j = 0; j < kBlockN / 16; ++j) {
        const int64_t col = kBlockN / 2 * int64_t{n_block} + 8 * j + 2 * (lane % 4);
        if (col >= half) continue;
        const float* gate = &acc[4 * j + 2 * h];
        const float* up = &acc[4 * (j + kBlockN / 16) + 2 * h];
        *reinterpret_cast<uint32_t*>(out_row + col) =
            pack_pair<T>(act::forward(g.kind, gate[0], up[0]) * scale,
                         act::forward(g.kind, gate[1], up[1]) * scale);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        const int64_t col = kBlockN * int64_t{n_block} + 8 * j + 2 * (lane % 4);
        if (col >= g.n) continue;
        float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
        if (g.activate) {
          v0 = act::forward(g.kind, v0, 0.f);
          v1 = act::forward(g.kind, v1, 0.f);
        }
        *reinterpret_cast<uint32_t*>(out_row + col) = pack_pair<T>(v0 * scale, v1 * scale);
      }
    }
  }
#endif
}

}  // namespace kiln::cuda::grouped_gemm
