#pragma once
// What the w8a16 GEMV labs share: e4m3 pair conversion on the device, its exact value on the
// host, a seeded generator, and the e4m3 weights [n, k] with their 128 x 128 block scales
// (random codes without NaN, scales 0.5e-3 .. 1.5e-3), uploaded `sets` times so each timed call
// reads its weights from DRAM. The tensor-core MMA is kiln's (src/cuda/common/mma.cuh).
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "../../src/cuda/common/mma.cuh"
#include "lab_common.cuh"

using kiln::cuda::mma_16816;

// Two e4m3 codes as an f16x2 register (exact).
__device__ __forceinline__ uint32_t cvt_pair(uint16_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(two, __NV_E4M3);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// One step of the labs' f16-MMA GEMV shape. Lane 4g + p holds 16 e4m3 weights of weight row g at
// columns c .. c + 15 (wp) and row g of A at the same columns in f16 (x0: c .. c + 7, x1: c + 8 ..
// c + 15; A rows 8-15 zero). Four m16n8k16 MMAs (MMA q: k slots 2p, 2p + 1 <- columns c + 4q, +1;
// slots 2p + 8, 2p + 9 <- c + 4q + 2, +3) give A row g's sums with weight rows 2p, 2p + 1, added
// into acc times the block scale.
__device__ __forceinline__ void mma_pack_step(const uint4& wp, const uint4& x0, const uint4& x1,
                                              float scale, float (&acc)[2]) {
  const uint32_t xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
  const uint16_t* pairs = reinterpret_cast<const uint16_t*>(&wp);
  float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const uint32_t afrag[4] = {xw[2 * q], 0u, xw[2 * q + 1], 0u};
    mma_16816<__half>(part, afrag, cvt_pair(pairs[2 * q]), cvt_pair(pairs[2 * q + 1]));
  }
  acc[0] = fmaf(part[0], scale, acc[0]);
  acc[1] = fmaf(part[1], scale, acc[1]);
}

// The f16-MMA GEMV shape over one block's 8 weight rows (w: row g of them, lane 4g + p; s: their
// 128-row block's scales along K) and A row g (x, f16, or null: a zero row): warp `warp` takes the
// 64-column chunks warp, warp + 8, ..., one 16-byte weight pack a lane a step, the next pack
// loaded before the current one is used. acc: A row g's sums with weight rows 2p, 2p + 1.
template <int kK>
__device__ __forceinline__ void mma_row_sums(const uint8_t* w, const float* s, const __half* x,
                                             int warp, int p, float (&acc)[2]) {
  constexpr int kSteps = kK / (32 * 16);  // packs a lane
  uint4 next = *reinterpret_cast<const uint4*>(w + (4 * warp + p) * 16);
  for (int j = 0; j < kSteps; ++j) {
    const int c = (4 * warp + p + 32 * j) * 16;
    const uint4 wp = next;
    if (j + 1 < kSteps) next = *reinterpret_cast<const uint4*>(w + c + 32 * 16);
    uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
    if (x != nullptr) {
      x0 = *reinterpret_cast<const uint4*>(x + c);
      x1 = *reinterpret_cast<const uint4*>(x + c + 8);
    }
    const int kb = (c - p * 16) >> 7;  // the 4 lanes' 64 columns start at c - 16p
    mma_pack_step(wp, x0, x1, s[kb], acc);
  }
}

inline double e4m3_value(uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  const double v = e == 0 ? m / 8.0 * std::ldexp(1.0, -6) : (1 + m / 8.0) * std::ldexp(1.0, e - 7);
  return s ? -v : v;
}

// A linear congruential generator: the labs' inputs are the same every run.
struct LabRandom {
  uint32_t seed = 12345;
  uint32_t next() { return seed = seed * 1664525u + 1013904223u; }
  float unit() { return (next() >> 8) * (1.f / 16777216.f); }  // [0, 1)
};

struct Fp8Weights {
  int n, k;
  std::vector<uint8_t> w;    // [n, k]
  std::vector<float> scale;  // [n / 128, k / 128]
  uint8_t* dev_w = nullptr;  // `sets` copies of w, w.size() bytes apart
  float* dev_scale = nullptr;

  Fp8Weights(int rows, int cols, int sets, LabRandom& rng)
      : n(rows), k(cols), w(size_t(rows) * cols), scale(size_t(rows / 128) * (cols / 128)) {
    for (auto& b : w) {
      b = uint8_t(rng.next() >> 24);
      if ((b & 0x7f) == 0x7f) b = 0;  // no NaN codes
    }
    for (auto& v : scale) v = 1e-3f * (0.5f + rng.unit());
    CHECK(cudaMalloc(&dev_w, w.size() * sets));
    CHECK(cudaMalloc(&dev_scale, scale.size() * 4));
    for (int i = 0; i < sets; ++i)
      CHECK(cudaMemcpy(dev_w + i * w.size(), w.data(), w.size(), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dev_scale, scale.data(), scale.size() * 4, cudaMemcpyHostToDevice));
  }

  // Weight (r, c) times its block scale, in float64.
  double value(int r, int c) const {
    return e4m3_value(w[size_t(r) * k + c]) * scale[size_t(r / 128) * (k / 128) + c / 128];
  }
};
