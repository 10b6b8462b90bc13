#pragma once
// What the one-file labs (bench/lab/*.cu) share: the CUDA error check, bf16 16-byte packs, a row
// sum over a block's threads, and a timer that reports medians of CUDA-event timings next to a
// 1 GiB device-to-device copy (the ceiling). Lab code: plain nvcc, no kiln build.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x)                                                                    \
  do {                                                                              \
    cudaError_t e = (x);                                                            \
    if (e != cudaSuccess) {                                                         \
      std::printf("CUDA %s at %s:%d\n", cudaGetErrorString(e), __FILE__, __LINE__); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

using bf16 = __nv_bfloat16;

// Eight bf16 values, one 16-byte access.
struct alignas(16) P8 {
  uint32_t w[4];
};

__device__ __forceinline__ void widen8(const P8& p, float (&f)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(p.w[i] << 16);
    f[2 * i + 1] = __uint_as_float(p.w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ P8 narrow8(const float (&f)[8]) {
  P8 p;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    p.w[i] = *reinterpret_cast<uint32_t*>(&h);
  }
  return p;
}

// Sum of kN values over the kTpr threads of a row (threadIdx.y picks the row); scratch holds
// [rows][kTpr / 32][kN] floats.
template <int kTpr, int kN>
__device__ __forceinline__ void row_sum(float (&v)[kN], float* scratch) {
#pragma unroll
  for (int k = 0; k < kN; ++k)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_xor_sync(~0u, v[k], o);
  if constexpr (kTpr > 32) {
    constexpr int kWarps = kTpr / 32;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float* s = scratch + threadIdx.y * kWarps * kN;
    if (lane == 0)
#pragma unroll
      for (int k = 0; k < kN; ++k) s[warp * kN + k] = v[k];
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kN; ++k) v[k] = s[(lane % kWarps) * kN + k];
#pragma unroll
    for (int k = 0; k < kN; ++k)
#pragma unroll
      for (int o = kWarps / 2; o > 0; o >>= 1) v[k] += __shfl_xor_sync(~0u, v[k], o);
  }
}

// Medians of CUDA-event timings on one stream.
struct LabTimer {
  cudaStream_t stream;
  cudaEvent_t start, stop;

  LabTimer() {
    CHECK(cudaStreamCreate(&stream));
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
  }

  // The median ms of `reps` calls of run(i) (i counts from 0, warmup calls included and dropped).
  template <typename F>
  float median_ms(F&& run, int reps, int warmup = 3) {
    std::vector<float> t;
    for (int i = 0; i < reps + warmup; ++i) {
      CHECK(cudaEventRecord(start, stream));
      run(i);
      CHECK(cudaEventRecord(stop, stream));
      CHECK(cudaEventSynchronize(stop));
      float ms;
      CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (i >= warmup) t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

  // Prints the ceiling: a 1 GiB device-to-device copy (bytes read + written), median of 30.
  void print_copy_ceiling() {
    const size_t bytes = size_t(1) << 30;
    void *s, *d;
    CHECK(cudaMalloc(&s, bytes));
    CHECK(cudaMalloc(&d, bytes));
    CHECK(cudaMemset(s, 1, bytes));
    const float ms = median_ms(
        [&](int) { CHECK(cudaMemcpyAsync(d, s, bytes, cudaMemcpyDeviceToDevice, stream)); }, 30, 0);
    std::printf("copy 1 GiB: %.4f ms, %.0f GB/s\n", ms, 2.0 * bytes / ms / 1e6);
    CHECK(cudaFree(s));
    CHECK(cudaFree(d));
  }
};
