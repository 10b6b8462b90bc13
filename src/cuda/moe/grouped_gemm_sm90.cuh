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
// FP8 (e4m3) A and B with DeepSeek-V3's scales (1 x 128 for A, 128 x 128 for B) take 128 x 128
// tiles, 128-element K slices (the same 128-byte swizzled rows) and consume_fp8's promotion.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

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
// Clusters of two multicasting a shared tile were measured slower, both when pairing two row
// blocks of one expert (sharing B) and two column tiles of one row block (sharing A): 1.5-1.7x at
// DeepSeek-V3's prefill shape, with L2 throughput still at 93% (bench/results/2026-11-24-h100-s14).
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
  // FP8 (e4m3) A and B: 1 x 128 scales of A [rows, ceil(K / 128)] (rows a_scale_stride apart) and
  // 128 x 128 block scales of B [E, ceil(N / 128), ceil(K / 128)] contiguous; null otherwise.
  const float* a_scale = nullptr;
  int64_t a_scale_stride = 0;
  const float* b_scale = nullptr;
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
  // Past the used blocks: skipped anyway.
  if (b >= limit) return make_int2(b, static_cast<int>(linear % g.n_tiles));
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

// What one CTA computes: its tile, the tile's expert and rows in use, and whether it runs at all
// (a block past the grid or the used rows, of an expert not held here, or with no rows is
// skipped: its rows are not written). Warp-collective.
struct TilePlan {
  int m_block = 0, n_block = 0, expert = -1, block_rows = 0;
  bool run = false;
};

__device__ __forceinline__ TilePlan plan_of(const GroupedGemmArgs& g, int64_t linear, int lane) {
  const int2 tile = tile_of(g, linear, lane);
  TilePlan p;
  p.m_block = tile.x;
  p.n_block = tile.y;
  const int64_t m0 = int64_t{p.m_block} * kBlockM;
  if (p.m_block >= g.m_blocks || (g.rows_used != nullptr && m0 >= *g.rows_used)) return p;
  p.expert = g.block_expert[p.m_block];
  p.block_rows = g.block_rows != nullptr ? g.block_rows[p.m_block] : kBlockM;
  p.run = p.expert >= 0 && p.block_rows > 0;
  return p;
}

// The producer (one thread): A slices from the CTA's rows, B slices of the expert as two boxes of
// kBlockN / 2 rows (gated: the gate rows, then the matching up rows; plain: two halves).
// kSliceK: K elements a stage (64 two-byte ones, or 128 FP8 ones: a 128-byte row either way).
template <bool kGated, typename Cfg, int kSliceK = kBlockK>
__device__ __forceinline__ void produce(const GroupedGemmArgs& g, const TilePlan& plan,
                                        uint8_t* s_a, uint8_t* s_b, uint64_t* full,
                                        uint64_t* empty) {
  constexpr int kStages = Cfg::kStages, kHalf = Cfg::kBlockN / 2;
  prefetch_tensor_map(&g.a);
  prefetch_tensor_map(&g.b);
  const int k_blocks = static_cast<int>((g.k + kSliceK - 1) / kSliceK);
  const int m0 = plan.m_block * kBlockM;
  const int b_row0 = kGated ? kHalf * plan.n_block : Cfg::kBlockN * plan.n_block;
  const int b_row1 = kGated ? static_cast<int>(g.n / 2) + kHalf * plan.n_block : b_row0 + kHalf;
  for (int kb = 0; kb < k_blocks; ++kb) {
    const int s = kb % kStages;
    barrier_wait_parity(&empty[s], ((kb / kStages) & 1) ^ 1);
    barrier_arrive_expect_tx(&full[s], kATileBytes + Cfg::kBTileBytes);
    tma_load_3d(s_a + s * kATileBytes, &g.a, kb * kSliceK, m0, 0, &full[s]);
    uint8_t* const b_tile = s_b + s * Cfg::kBTileBytes;
    tma_load_3d(b_tile, &g.b, kb * kSliceK, b_row0, plan.expert, &full[s]);
    tma_load_3d(b_tile + kHalf * kRowBytes, &g.b, kb * kSliceK, b_row1, plan.expert, &full[s]);
  }
}

// The epilogue of either main loop: acc (a warpgroup's 64 rows x kBlockN, wgmma's layout) into
// out, gated or plain, scaled by row_scale; rows past the block's count or the tensor unwritten.
template <typename T, bool kGated, int kBlockN>
__device__ __forceinline__ void store_tile(const GroupedGemmArgs& g, const TilePlan& plan,
                                           const float (&acc)[kBlockN / 2]) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, wg = warp / 4;
  const int64_t m0 = int64_t{plan.m_block} * kBlockM;
  const int n_block = plan.n_block, block_rows = plan.block_rows;
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
}

// Waits until stage kb's tiles have landed; returns the shared addresses of this warpgroup's 64 A
// rows and of the B tile.
template <typename Cfg>
__device__ __forceinline__ uint2 wait_stage(int kb, int wg, uint8_t* s_a, uint8_t* s_b,
                                            uint64_t* full) {
  const int s = kb % Cfg::kStages;
  barrier_wait_parity(&full[s], (kb / Cfg::kStages) & 1);
  return make_uint2(shared_address(s_a + s * kATileBytes) + 64 * wg * kRowBytes,
                    shared_address(s_b + s * Cfg::kBTileBytes));
}

// The two consumer warpgroups: the main loop over K slices, then the epilogue.
template <typename T, bool kGated, typename Cfg>
__device__ __forceinline__ void consume(const GroupedGemmArgs& g, const TilePlan& plan,
                                        uint8_t* s_a, uint8_t* s_b, uint64_t* full,
                                        uint64_t* empty) {
  constexpr int kBlockN = Cfg::kBlockN, kStages = Cfg::kStages;
  // Consumers: warpgroup wg owns rows m0 + 64 wg ..
  const int lane = threadIdx.x % 32, wg = threadIdx.x / 128;
  const bool active = 64 * wg < plan.block_rows;
  const int k_blocks = static_cast<int>((g.k + kBlockK - 1) / kBlockK);
  float acc[kBlockN / 2];
#pragma unroll
  for (int i = 0; i < kBlockN / 2; ++i) acc[i] = 0.f;
  // One k-slice batch stays in flight: after issuing slice kb, wait for kb - 1 and free its stage.
  // An idle warpgroup only frees stages; its loop is a separate one because a wgmma under a
  // branch inside the loop made ptxas serialise every wgmma (C7515).
  if (active) {
    for (int kb = 0; kb < k_blocks; ++kb) {
      const uint2 tiles = wait_stage<Cfg>(kb, wg, s_a, s_b, full);
      const uint32_t a_base = tiles.x, b_base = tiles.y;
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
  store_tile<T, kGated, kBlockN>(g, plan, acc);
}

// The FP8 main loop (DeepSeek-V3's scaling, DeepGEMM's promotion): each 128-wide K slice is
// multiplied by four e4m3 k32 wgmmas into a fresh fp32 tile, which is then added into the running
// accumulators times the A row's 1 x 128 scale and the B rows' 128 x 128 scale of that slice. The
// slice's wgmmas complete before the add (wait 0), and its stage is freed at once. A 128-wide
// tile's B rows lie in one 128-row scale block (plain: columns 128 n_block ..; gated: 64 gate rows
// and 64 up rows, each 64-aligned, so each in one block: two scales). Out of T (bf16/f16).
// The next slice's four scales are loaded before this slice's wgmmas are waited on: loaded after
// the wait, their L2 latency (longer than a slice's wgmmas) stalled every slice.
template <typename T, bool kGated, typename Cfg>
__device__ __forceinline__ void consume_fp8(const GroupedGemmArgs& g, const TilePlan& plan,
                                            uint8_t* s_a, uint8_t* s_b, uint64_t* full,
                                            uint64_t* empty) {
  static_assert(std::is_same_v<Cfg, Tile128>, "FP8 runs the n128 tile (pick_tile)");
  constexpr int kBlockN = 128, kStages = Cfg::kStages, kHalf = kBlockN / 2;
  constexpr int kSliceK = 128;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, wg = warp / 4;
  const bool active = 64 * wg < plan.block_rows;
  const int k_blocks = static_cast<int>((g.k + kSliceK - 1) / kSliceK);
  float acc[kBlockN / 2], part[kBlockN / 2];
#pragma unroll
  for (int i = 0; i < kBlockN / 2; ++i) acc[i] = 0.f;
  if (active) {
    // This thread's two rows (clamped into A: rows past it are never stored) and the tile's B
    // scale rows.
    const int64_t row0 = int64_t{plan.m_block} * kBlockM + 64 * wg + 16 * (warp % 4) + lane / 4;
    const float* a_scale0 = g.a_scale + min(row0, g.rows - 1) * g.a_scale_stride;
    const float* a_scale1 = g.a_scale + min(row0 + 8, g.rows - 1) * g.a_scale_stride;
    const int64_t n_scale_blocks = (g.n + 127) / 128;
    const int64_t first_rows = kGated ? int64_t{kHalf} * plan.n_block : kBlockN * plan.n_block;
    const int64_t second_rows = kGated ? g.n / 2 + int64_t{kHalf} * plan.n_block : first_rows;
    const float* b_scales = g.b_scale + int64_t{plan.expert} * n_scale_blocks * k_blocks;
    const float* b_scale0 = b_scales + (first_rows / 128) * k_blocks;
    const float* b_scale1 = b_scales + (second_rows / 128) * k_blocks;
    float next[4] = {a_scale0[0], a_scale1[0], b_scale0[0], b_scale1[0]};
    for (int kb = 0; kb < k_blocks; ++kb) {
      const int s = kb % kStages;
      const float sa0 = next[0], sa1 = next[1], sb0 = next[2], sb1 = next[3];
      if (kb + 1 < k_blocks) {
        next[0] = a_scale0[kb + 1];
        next[1] = a_scale1[kb + 1];
        next[2] = b_scale0[kb + 1];
        next[3] = b_scale1[kb + 1];
      }
      const uint2 tiles = wait_stage<Cfg>(kb, wg, s_a, s_b, full);
      const uint32_t a_base = tiles.x, b_base = tiles.y;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kSliceK / 32; ++kk) {
        wgmma_ss_e4m3<kBlockN>(part, sw128_descriptor(a_base + 32 * kk, 16, 1024),
                               sw128_descriptor(b_base + 32 * kk, 16, 1024), kk > 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_accumulators(part);
      if (lane == 0) barrier_arrive(&empty[s]);
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        // Column tiles 0-7 are the first B rows (gated: the gate), 8-15 the second.
        const float sb = kGated && j >= kBlockN / 16 ? sb1 : sb0;
        acc[4 * j + 0] = fmaf(part[4 * j + 0], sa0 * sb, acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(part[4 * j + 1], sa0 * sb, acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(part[4 * j + 2], sa1 * sb, acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(part[4 * j + 3], sa1 * sb, acc[4 * j + 3]);
      }
    }
  } else {
    for (int kb = 0; kb < k_blocks; ++kb) {
      barrier_wait_parity(&full[kb % kStages], (kb / kStages) & 1);
      if (lane == 0) barrier_arrive(&empty[kb % kStages]);
    }
  }
  store_tile<T, kGated, kBlockN>(g, plan, acc);
}

// T: the element type of A, B and out; or, kFp8, of out alone (A and B e4m3 bytes).
template <typename T, bool kGated, typename Cfg, bool kFp8 = false>
__global__ void __launch_bounds__(kThreads, Cfg::kCtasPerSm)
    grouped_gemm_kernel(const __grid_constant__ GroupedGemmArgs g) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int kStages = Cfg::kStages;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* const smem = smem_raw + ((1024 - shared_address(smem_raw) % 1024) % 1024);
  uint8_t* const s_a = smem;                          // [kStages][128 rows][128 B]
  uint8_t* const s_b = smem + kStages * kATileBytes;  // [kStages][kBlockN rows][128 B]
  __shared__ uint64_t full[kStages], empty[kStages];

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  __shared__ TilePlan s_plan;
  if (warp == 0) {
    const TilePlan mine = plan_of(g, blockIdx.x, lane);
    if (lane == 0) s_plan = mine;
  }
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      barrier_init(&full[s], 1);
      barrier_init(&empty[s], kConsumerWarps);
    }
    barrier_init_fence();
  }
  __syncthreads();
  const TilePlan plan = s_plan;
  if (plan.run) {
    if (warp == kConsumerWarps) {
      if (lane == 0) produce<kGated, Cfg, kFp8 ? 128 : kBlockK>(g, plan, s_a, s_b, full, empty);
    } else if constexpr (kFp8) {
      consume_fp8<T, kGated, Cfg>(g, plan, s_a, s_b, full, empty);
    } else {
      consume<T, kGated, Cfg>(g, plan, s_a, s_b, full, empty);
    }
  }
#endif
}

}  // namespace kiln::cuda::grouped_gemm
