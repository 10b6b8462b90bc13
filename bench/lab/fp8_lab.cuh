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
