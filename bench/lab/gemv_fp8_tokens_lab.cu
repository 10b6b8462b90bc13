// Lab (H100): the w8a16 GEMV for R tokens that share an expert (fused_moe's T = 16-64 decode: at
// DeepSeek-V3's T = 64 a touched expert has ~2.3 tokens), one binary, no kiln build.
// Y [R, N] = X [R, K] W [N, K]^T with W e4m3 and 128 x 128 block scales, X bf16, fp32 sums;
// N = 8 x 4096 rows, K = 7168 (235 MB of e4m3, read once a call whatever R is).
//   fma: a warp a weight row, 16 weights a lane a step converted once (e4m3x2 -> f16x2 -> f32)
//        and used for each of the R token rows (bf16 x widened per use): kiln's by-expert
//        kernels (fused_moe_experts.cu), which ran no faster than per pick at T = 64 (s9).
//   mma: the s8 lab's f16 m16n8k16 shape (8 weight rows a block; lane 4g + p's 16-byte pack is
//        the B fragments of four MMAs after a cvt e4m3x2 -> f16x2 a pair) with A rows g < R taken
//        from token g's x (an f16 copy of x, made once: x is small), so one set of MMAs serves up
//        to 8 tokens (rows 8-15 of A zero). Each step's MMAs go into a fresh tile added to the
//        sums times the block scale.
// Both are checked against a host float64 result (sampled rows, every token), then timed
// (median of 30) beside a 1 GiB copy, for R = 1, 2, 4 and 8. What to look for: whether the
// weight stream stays near copy speed as R grows (the instruction cost a weight byte grows with R
// on the FMA shape, hardly at all on the MMA shape).
//
//   nvcc -O3 -std=c++20 -arch=sm_90a bench/lab/gemv_fp8_tokens_lab.cu -o /tmp/gtl && /tmp/gtl
// NOT YET RUN ON A GPU (written in s9).
#include <cmath>
#include <cstdio>
#include <vector>

#include "fp8_lab.cuh"

constexpr int kN = 8 * 4096, kK = 7168, kKB = kK / 128, kMaxR = 8;

struct Args {
  const uint8_t* w;    // [N, K] e4m3
  const float* scale;  // [N / 128, K / 128]
  const bf16* x;       // [R, K]
  const __half* xh;    // [R, K]: x in f16 (the MMA's A operand)
  float* y;            // [R, N]
};

// A warp a weight row, each 16-weight pack converted once and used for the R tokens; two packs a
// lane in flight.
template <int R>
__global__ void __launch_bounds__(256) gemv_fma(const Args a) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * 8 + threadIdx.x / 32;
  const uint8_t* w = a.w + size_t(row) * kK;
  const float* s = a.scale + (row / 128) * kKB;
  float acc[R] = {};
  auto use = [&](const uint4& wp, int c) {
    float wf[16];
    const uint16_t* pairs = reinterpret_cast<const uint16_t*>(&wp);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t h = cvt_pair(pairs[i]);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
      wf[2 * i] = f.x;
      wf[2 * i + 1] = f.y;
    }
    const float sc = s[c >> 7];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bf16* xr = a.x + size_t(r) * kK + c;
      float xf[16];
      widen8(*reinterpret_cast<const P8*>(xr), *reinterpret_cast<float(*)[8]>(xf));
      widen8(*reinterpret_cast<const P8*>(xr + 8), *reinterpret_cast<float(*)[8]>(xf + 8));
      float part = 0.f;
#pragma unroll
      for (int m = 0; m < 16; ++m) part = fmaf(wf[m], xf[m], part);
      acc[r] = fmaf(part, sc, acc[r]);
    }
  };
  constexpr int kStep = 32 * 16;  // kK = 14 steps: 7 pairs
  for (int c = lane * 16; c < kK; c += 2 * kStep) {
    const uint4 w0 = *reinterpret_cast<const uint4*>(w + c);
    const uint4 w1 = *reinterpret_cast<const uint4*>(w + c + kStep);
    use(w0, c);
    use(w1, c + kStep);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float v = acc[r];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
    if (lane == 0) a.y[size_t(r) * kN + row] = v;
  }
}

// 8 weight rows a block on tensor cores; A row g = token g (g < R), read from the f16 copy of x
// (L1-resident: R x 14 KB).
template <int R>
__global__ void __launch_bounds__(256) gemv_mma(const Args a) {
  __shared__ float sums[8][kMaxR][8];  // [warp][token][weight row]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, p = lane % 4;
  const int row0 = blockIdx.x * 8;
  const uint8_t* w = a.w + size_t(row0 + g) * kK;
  const float* s = a.scale + (row0 / 128) * kKB;
  float acc[2] = {0.f, 0.f};
  mma_row_sums<kK>(w, s, g < R ? a.xh + size_t(g) * kK : nullptr, warp, p, acc);
  if (g < R) {
    sums[warp][g][2 * p] = acc[0];
    sums[warp][g][2 * p + 1] = acc[1];
  }
  __syncthreads();
  if (threadIdx.x < R * 8) {
    const int t = threadIdx.x / 8, r = threadIdx.x % 8;
    float v = 0.f;
#pragma unroll
    for (int k = 0; k < 8; ++k) v += sums[k][t][r];
    a.y[size_t(t) * kN + row0 + r] = v;
  }
}

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf(
      "# w8a16 GEMV lab, R tokens an expert: %s, N = %d, K = %d, e4m3 weights %.0f MB, "
      "median of 30\n",
      prop.name, kN, kK, double(kN) * kK / 1e6);
  LabTimer timer;
  timer.print_copy_ceiling();
  LabRandom rng;
  const int sets = 3;  // 3 x 235 MB: each timed call reads its weights from DRAM
  const Fp8Weights wt(kN, kK, sets, rng);
  std::vector<bf16> hx(size_t(kMaxR) * kK);
  std::vector<__half> hxh(hx.size());
  for (size_t i = 0; i < hx.size(); ++i) {
    hx[i] = __float2bfloat16_rn((rng.unit() - 0.5f) * 4.f);
    hxh[i] = __float2half_rn(__bfloat162float(hx[i]));  // exact: |x| <= 2, well inside f16
  }
  float* dy;
  bf16* dx;
  __half* dxh;
  CHECK(cudaMalloc(&dx, hx.size() * 2));
  CHECK(cudaMalloc(&dxh, hxh.size() * 2));
  CHECK(cudaMalloc(&dy, size_t(kMaxR) * kN * 4));
  CHECK(cudaMemcpy(dx, hx.data(), hx.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dxh, hxh.data(), hxh.size() * 2, cudaMemcpyHostToDevice));
  // Host float64 on every 211th row, every token.
  std::vector<int> rows;
  std::vector<double> want;  // [row sample][token]
  for (int r = 0; r < kN; r += 211) {
    rows.push_back(r);
    for (int t = 0; t < kMaxR; ++t) {
      double acc = 0;
      for (int c = 0; c < kK; ++c) {
        acc += wt.value(r, c) * double(__bfloat162float(hx[size_t(t) * kK + c]));
      }
      want.push_back(acc);
    }
  }
  struct V {
    const char* name;
    int r;
    void (*k)(const Args);
  } variants[] = {{"fma", 1, gemv_fma<1>},     {"fma", 2, gemv_fma<2>},
                  {"fma", 4, gemv_fma<4>},     {"fma", 8, gemv_fma<8>},
                  {"mma f16", 1, gemv_mma<1>}, {"mma f16", 2, gemv_mma<2>},
                  {"mma f16", 4, gemv_mma<4>}, {"mma f16", 8, gemv_mma<8>}};
  std::vector<float> got(size_t(kMaxR) * kN);
  for (const V& v : variants) {
    CHECK(cudaMemset(dy, 0xff, got.size() * 4));
    v.k<<<kN / 8, 256, 0, timer.stream>>>(Args{wt.dev_w, wt.dev_scale, dx, dxh, dy});
    CHECK(cudaStreamSynchronize(timer.stream));
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(got.data(), dy, got.size() * 4, cudaMemcpyDeviceToHost));
    double worst = 0, norm = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      for (int t = 0; t < v.r; ++t) {
        const double g = got[size_t(t) * kN + rows[i]], w = want[i * kMaxR + t];
        worst = std::isnan(g) ? 1e30 : std::max(worst, std::fabs(g - w));
        norm = std::max(norm, std::fabs(w));
      }
    }
    const float ms = timer.median_ms(
        [&](int i) {
          v.k<<<kN / 8, 256, 0, timer.stream>>>(
              Args{wt.dev_w + (i % sets) * wt.w.size(), wt.dev_scale, dx, dxh, dy});
        },
        30);
    std::printf("%-8s R = %d  %8.4f ms %6.0f GB/s of weights  max err %.1e of max %.1e%s\n", v.name,
                v.r, ms, wt.w.size() / ms / 1e6, worst, norm, worst > 1e-3 * norm ? "  WRONG" : "");
  }
  return 0;
}
