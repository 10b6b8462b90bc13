#pragma once
// CUDA fused_moe: launches for a validated problem; returns the variant name. The grid shape is
// a pure function here, so the host tests check it (and its limits) without a GPU.
#include <cstdint>
#include <string>

#include "cuda/moe/moe_align_launch.h"
#include "kiln/core/error.h"
#include "kiln/core/stream.h"
#include "ops/moe_problem.h"

namespace kiln::cuda {

// Warps a block of either kernel: each warp computes one output (one intermediate value, or one
// element of out), so a block covers 8 consecutive columns of one row.
inline constexpr int kFusedMoeWarps = 8;
// CUDA's grid limits: 2^31 - 1 blocks in x, 65535 in y.
inline constexpr int64_t kGridMaxX = 2147483647, kGridMaxY = 65535;

// up: x = the (t, j) picks (T * k), y = blocks of kFusedMoeWarps intermediate columns.
// down: x = the tokens, y = blocks of kFusedMoeWarps columns of H.
struct FusedMoeGrid {
  int64_t up_x = 0, up_y = 0, down_x = 0, down_y = 0;
};

inline FusedMoeGrid fused_moe_grid(const MoeProblem& p) {
  FusedMoeGrid g;
  g.up_x = p.tokens * p.k;
  g.up_y = (p.inter + kFusedMoeWarps - 1) / kFusedMoeWarps;
  g.down_x = p.tokens;
  g.down_y = (p.hidden + kFusedMoeWarps - 1) / kFusedMoeWarps;
  auto check = [&](const char* what, int64_t blocks, int64_t limit) {
    if (blocks > limit) {
      throw Error(p.op + ": " + what + " needs " + std::to_string(blocks) +
                  " blocks, over CUDA's grid limit of " + std::to_string(limit) +
                  " (the one-warp-per-output kernels)");
    }
  };
  check("T * k (the picks)", g.up_x, kGridMaxX);
  check("I / 8 (intermediate columns)", g.up_y, kGridMaxY);
  check("H / 8 (hidden columns)", g.down_y, kGridMaxY);
  return g;
}

std::string fused_moe(const MoeProblem& p, Stream stream);

// moe_align's arguments for fused_moe's picks (both the grouped GEMM path and the by-expert GEMV
// kernels group them by local expert first); bad ids and map values count into p.bad_ids.
inline MoeAlignArgs fused_moe_align_args(const MoeProblem& p, int block_size, int64_t capacity,
                                         int32_t* sorted, int32_t* expert_ids, int32_t* post_pad) {
  return {static_cast<const int32_t*>(p.ids.data),
          p.tokens,
          p.k,
          p.ids.row_stride,
          1,
          p.expert_map,
          1,
          static_cast<int>(p.experts),
          static_cast<int>(p.local_experts),
          block_size,
          capacity,
          sorted,
          expert_ids,
          post_pad,
          p.bad_ids};
}

// The prefill path (fused_moe_grouped.cu): align, gather, two grouped wgmma GEMMs, combine. It
// fits a Hopper device with H % 8 == 0, I % 64 == 0 (gated) or % 8 (relu2) and 16-byte aligned
// weights. fused_moe takes it from kGroupedMinEntries routed entries on: at DeepSeek-V3's shapes
// it beat the GEMV kernels from T = 64 (512 picks: 7.9 ms against 11.1) but not at T = 16
// (bench/results/2026-11-23-h100-s6). KILN_FUSED_MOE=gemv or =grouped forces a path.
inline constexpr int64_t kGroupedMinEntries = 512;
bool fused_moe_grouped_fits(const MoeProblem& p);
std::string fused_moe_grouped(const MoeProblem& p, Stream stream);

// fused_moe takes the by-expert MMA kernels (e4m3 weights, moe_gemv.cuh) from this many routed
// entries on. At DeepSeek-V3's w8a16 shapes on the H100 (0c32f5c): T = 64 (512 entries) 3.69 ms
// by expert against 5.85 per pick (89% and 56% of copy over the touched weights); T = 16 (128)
// 1.76 against 1.75, even, so the per-pick kernels keep the small counts.
inline constexpr int64_t kExpertsMmaMinEntries = 256;

}  // namespace kiln::cuda
