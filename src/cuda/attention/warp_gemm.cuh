#pragma once
// The two warp-level GEMM shapes of the attention kernels on m16n8k16 MMAs, one 16-row m tile a
// warp, operands in swizzled shared memory (attention_forward.cuh's `swizzled`):
// - gemm_abt: acc[16 x N] += A[16 x K] Bᵀ, A rows a_row0.. of a [.][K] tile, B rows 0..N-1 of a
//   [N][K] tile (S = Q Kᵀ, dP = dO Vᵀ, and their transposes);
// - gemm_pb: acc[16 x N] += P[16 x K] B, P in C-fragment registers (fp32, rounded to T here),
//   B a row-major [K][N] tile read transposed (O += P V, dQ += dS K, dV += Pᵀ dO, dK += dSᵀ Q).
#include <cstdint>

#include "cuda/attention/tile_common.cuh"
#include "cuda/common/mma.cuh"

namespace kiln::cuda::attention_tiles {

template <typename T, int kK, int kN>
__device__ __forceinline__ void gemm_abt(float (&acc)[kN / 8][4], const T* a, int a_row0,
                                         const T* b) {
  const int lane = threadIdx.x % 32;
#pragma unroll 2
  for (int kk = 0; kk < kK / 16; ++kk) {
    uint32_t fa[4];
    ldmatrix_x4(fa, a + swizzled<kK>(a_row0 + lane % 16, 16 * kk + lane / 16 * 8));
#pragma unroll
    for (int np = 0; np < kN / 16; ++np) {
      uint32_t fb[4];
      ldmatrix_x4(
          fb, b + swizzled<kK>(16 * np + lane / 16 * 8 + lane % 8, 16 * kk + (lane / 8) % 2 * 8));
      mma_16816<T>(acc[2 * np], fa, fb[0], fb[1]);
      mma_16816<T>(acc[2 * np + 1], fa, fb[2], fb[3]);
    }
  }
}

template <typename T, int kK, int kN>
__device__ __forceinline__ void gemm_pb(float (&acc)[kN / 8][4], const float (&p)[kK / 8][4],
                                        const T* b) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < kK / 16; ++kk) {
    const uint32_t fa[4] = {pack_pair<T>(p[2 * kk][0], p[2 * kk][1]),
                            pack_pair<T>(p[2 * kk][2], p[2 * kk][3]),
                            pack_pair<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                            pack_pair<T>(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int np = 0; np < kN / 16; ++np) {
      uint32_t fb[4];
      ldmatrix_x4_trans(
          fb, b + swizzled<kN>(16 * kk + (lane / 8) % 2 * 8 + lane % 8, 16 * np + lane / 16 * 8));
      mma_16816<T>(acc[2 * np], fa, fb[0], fb[1]);
      mma_16816<T>(acc[2 * np + 1], fa, fb[2], fb[3]);
    }
  }
}

}  // namespace kiln::cuda::attention_tiles
