// Lab (H100): the w8a16 decode GEMV two ways, one binary, no kiln build. y [N] = W [N, K] x [K]
// with W e4m3 and DeepSeek-V3's 128 x 128 block scales, x bf16, fp32 sums; N = 8 experts' up
// projection (8 x 4096 rows), K = 7168: 235 MB of weights, what fused_moe's up kernel reads at
// T = 1.
//   fma: a warp a row, 16 weights a lane a step, e4m3 -> f16x2 -> f32 and fp32 FMAs (kiln's
//        moe_up_kernel's shape; 74 instructions a 16-byte pack in its SASS, yet 2825 GB/s, 94%
//        of copy, in this lab at d518334: not bound by issue at T = 1).
//   mma: a block of 8 warps a group of 8 rows; lane 4g + p of warp w takes the 16-byte pack
//        4w + p + 32j of row g: its 16 weights are, after one cvt e4m3x2 -> f16x2 a pair, the B
//        fragments of four m16n8k16 f16 MMAs, whose A fragments are x (in shared memory as f16,
//        token row 0; rows 1-15 zero) at the same permuted columns. The 4 lanes' packs of a row
//        are 64 aligned columns, inside one 128-column scale block: each step's MMAs go into a
//        fresh tile added to the sums times the rows' block scales. x in f16 is exact for the
//        bf16 values in f16's normal range (the lab's x is).
// Each is checked against a host float64 result on a sample of rows, then timed (median of 50)
// beside a 1 GiB copy.
//
//   nvcc -O3 -std=c++20 -arch=sm_90a bench/lab/gemv_fp8_lab.cu -o /tmp/gfl && /tmp/gfl
#include <cmath>
#include <cstdio>
#include <vector>

#include "fp8_lab.cuh"

constexpr int kN = 8 * 4096, kK = 7168, kKB = kK / 128;

struct Args {
  const uint8_t* w;    // [N, K] e4m3
  const float* scale;  // [N / 128, K / 128]
  const bf16* x;       // [K]
  float* y;            // [N]
};

// A warp a row: the shape of kiln's w8a16 GEMV.
__global__ void __launch_bounds__(256) gemv_fma(const Args a) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * 8 + threadIdx.x / 32;
  const uint8_t* w = a.w + size_t(row) * kK;
  const float* s = a.scale + (row / 128) * kKB;
  float acc = 0.f;
  for (int c = lane * 16; c < kK; c += 32 * 16) {
    const uint4 wp = *reinterpret_cast<const uint4*>(w + c);
    const P8 x0 = *reinterpret_cast<const P8*>(a.x + c);
    const P8 x1 = *reinterpret_cast<const P8*>(a.x + c + 8);
    float xf[16];
    widen8(x0, *reinterpret_cast<float(*)[8]>(xf));
    widen8(x1, *reinterpret_cast<float(*)[8]>(xf + 8));
    const uint16_t* pairs = reinterpret_cast<const uint16_t*>(&wp);
    float part = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t h = cvt_pair(pairs[i]);
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
      part = fmaf(f.x, xf[2 * i], part);
      part = fmaf(f.y, xf[2 * i + 1], part);
    }
    acc = fmaf(part, s[c >> 7], acc);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(~0u, acc, o);
  if (lane == 0) a.y[row] = acc;
}

// 8 rows a block on tensor cores (see the file comment).
__global__ void __launch_bounds__(256) gemv_mma(const Args a) {
  __shared__ alignas(16) __half xs[kK];
  __shared__ float sums[8][8];  // [warp][row]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, p = lane % 4;
  for (int c = threadIdx.x * 8; c < kK; c += 256 * 8) {
    float f[8];
    widen8(*reinterpret_cast<const P8*>(a.x + c), f);
#pragma unroll
    for (int i = 0; i < 8; i += 2) {
      *reinterpret_cast<__half2*>(&xs[c + i]) = __floats2half2_rn(f[i], f[i + 1]);
    }
  }
  __syncthreads();
  const int row0 = blockIdx.x * 8;
  const uint8_t* w = a.w + size_t(row0 + g) * kK;
  // The scale rows of this lane's two C columns (weight rows 2p, 2p + 1): one 128-row block.
  const float* s = a.scale + (row0 / 128) * kKB;
  float acc[2] = {0.f, 0.f};
  mma_row_sums<kK>(w, s, g == 0 ? xs : nullptr, warp, p, acc);  // A row 0: the token
  if (g == 0) {
    sums[warp][2 * p] = acc[0];
    sums[warp][2 * p + 1] = acc[1];
  }
  __syncthreads();
  if (threadIdx.x < 8) {
    float t = 0.f;
#pragma unroll
    for (int v = 0; v < 8; ++v) t += sums[v][threadIdx.x];
    a.y[row0 + threadIdx.x] = t;
  }
}

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# w8a16 GEMV lab: %s, N = %d, K = %d, e4m3 weights %.0f MB, median of 50\n",
              prop.name, kN, kK, double(kN) * kK / 1e6);
  LabTimer timer;
  timer.print_copy_ceiling();
  LabRandom rng;
  const int sets = 3;  // 3 x 235 MB: each timed call reads its weights from DRAM
  const Fp8Weights wt(kN, kK, sets, rng);
  std::vector<bf16> hx(kK);
  for (auto& v : hx) v = __float2bfloat16_rn((rng.unit() - 0.5f) * 4.f);
  float* dy;
  bf16* dx;
  CHECK(cudaMalloc(&dx, kK * 2));
  CHECK(cudaMalloc(&dy, kN * 4));
  CHECK(cudaMemcpy(dx, hx.data(), kK * 2, cudaMemcpyHostToDevice));
  // Host float64 on every 97th row.
  std::vector<int> rows;
  std::vector<double> want;
  for (int r = 0; r < kN; r += 97) {
    double t = 0;
    for (int c = 0; c < kK; ++c) {
      t += wt.value(r, c) * double(__bfloat162float(hx[c]));
    }
    rows.push_back(r);
    want.push_back(t);
  }
  struct V {
    const char* name;
    void (*k)(const Args);
  } variants[] = {{"fma (kiln's shape)", gemv_fma}, {"mma f16", gemv_mma}};
  std::vector<float> got(kN);
  for (const V& v : variants) {
    CHECK(cudaMemset(dy, 0xff, kN * 4));
    v.k<<<kN / 8, 256, 0, timer.stream>>>(Args{wt.dev_w, wt.dev_scale, dx, dy});
    CHECK(cudaStreamSynchronize(timer.stream));
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(got.data(), dy, kN * 4, cudaMemcpyDeviceToHost));
    double worst = 0, norm = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      const double g = got[rows[i]];
      worst = std::isnan(g) ? 1e30 : std::max(worst, std::fabs(g - want[i]));
      norm = std::max(norm, std::fabs(want[i]));
    }
    const float ms = timer.median_ms(
        [&](int i) {
          v.k<<<kN / 8, 256, 0, timer.stream>>>(
              Args{wt.dev_w + (i % sets) * wt.w.size(), wt.dev_scale, dx, dy});
        },
        50);
    std::printf("%-20s %8.4f ms %6.0f GB/s  max err %.1e of max %.1e%s\n", v.name, ms,
                wt.w.size() / ms / 1e6, worst, norm, worst > 1e-3 * norm ? "  WRONG" : "");
  }
  return 0;
}
