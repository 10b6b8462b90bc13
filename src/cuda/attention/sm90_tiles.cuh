#pragma once
// Tile pieces of the wgmma + TMA attention kernels: the 128-byte-swizzled box layout TMA writes,
// the 3-D tensor map of a [tokens, heads, dim] view, and the copy a producer warp makes instead
// of TMA when a tile runs past the valid rows (which it zero-fills).
#include <cuda.h>

#include <cstdint>

#include "cuda/attention/attention_launch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_arch.h"
#include "cuda/common/env.h"
#include "cuda/common/tensor_map.h"

namespace kiln::cuda::sm90_tiles {

constexpr int kRowBytes = 128;  // one swizzled row of a box: 64 16-bit elements

// A [tokens, heads, dim] view as a tensor map read in boxes of 64 columns x `rows` tokens.
inline bool map_heads(CUtensorMap* map, const HeadRows& t, int dim, int64_t tokens, int heads,
                      int rows) {
  const uint64_t dims[3] = {static_cast<uint64_t>(dim), static_cast<uint64_t>(heads),
                            static_cast<uint64_t>(tokens)};
  const int64_t strides[2] = {t.head, t.token};
  const uint32_t box[3] = {64, 1, static_cast<uint32_t>(rows)};
  return encode_tensor_map_3d(map, t.data, dims, strides, box).empty();
}

// `variable`=mma_sync (KILN_ATTENTION_FWD, KILN_ATTENTION_BWD) keeps that pass on the mma.sync
// kernels (A/B runs and the oracle); unset or anything else lets the wgmma kernels take it.
inline bool mma_sync_forced(const char* variable) {
  return env_is(variable, "mma_sync");
}

// The warpgroups' ping-pong: on in the forward, off in the backward unless
// KILN_ATTENTION_PINGPONG is 1 (on) or 0 (off). On the H100 (bench/results/2026-11-24-h100-s11)
// it took the forward +1% to +18% in every d128 case once the mask stopped branching (T2048 554
// vs 469 TFLOP/s, causal T8192 592 vs 527); the backward moved within noise either way. (In
// session 5, with the branching mask, the same A/B had been -7% to +8%.)
inline bool ping_pong_enabled(bool forward) {
  if (env_is("KILN_ATTENTION_PINGPONG", "1")) return true;
  if (env_is("KILN_ATTENTION_PINGPONG", "0")) return false;
  return forward;
}

#if defined(__CUDACC__)
// Two consumer warpgroups taking turns on the tensor cores (FA3's ping-pong): a group waits for
// its turn before issuing a GEMM batch and hands the turn over right after issuing it, so one
// group's softmax runs under the other's GEMMs. Named barriers 1 and 2, 256 threads each; both
// groups must issue the same number of batches. Off (every call a no-op) when !on.
struct PingPong {
  int group;  // 0 or 1
  bool on;
  __device__ void start() const {  // group 0 goes first
    if (on && group == 1) asm volatile("bar.arrive 1, 256;\n" ::: "memory");
  }
  __device__ void wait_turn() const {
    if (on) asm volatile("bar.sync %0, 256;\n" ::"r"(1 + group) : "memory");
  }
  __device__ void pass_turn() const {
    if (on) asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - group) : "memory");
  }
  __device__ void finish() const {  // group 0 takes group 1's last hand-over
    if (on && group == 0) asm volatile("bar.sync 1, 256;\n" ::: "memory");
  }
};

// Rows [row0, row0 + kRows) of one head (src points at its row 0, `token` elements apart) into a
// tile of kCols / 64 boxes in TMA's swizzled layout, by the 32 lanes of one warp; rows at or past
// `limit` are zeroed. The caller fences (fence_async_shared) before the tile is read by wgmma.
template <typename T, int kRows, int kCols>
__device__ __forceinline__ void copy_rows_zero_tail(uint8_t* tile, const T* src, int64_t token,
                                                    int row0, int64_t limit) {
  for (int c = threadIdx.x % 32; c < kRows * kCols / 8; c += 32) {
    const int row = c / (kCols / 8), chunk = c % (kCols / 8);
    uint4 value = make_uint4(0, 0, 0, 0);
    if (row0 + row < limit) {
      value = *reinterpret_cast<const uint4*>(src + (row0 + row) * token + 8 * chunk);
    }
    *reinterpret_cast<uint4*>(tile + (chunk / 8) * kRows * kRowBytes + row * kRowBytes +
                              16 * ((chunk % 8) ^ (row % 8))) = value;
  }
}
#endif

}  // namespace kiln::cuda::sm90_tiles
