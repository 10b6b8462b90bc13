// Lab (H100): RMSNorm / LayerNorm forward launch shapes side by side, bf16, M = 16384 rows, one
// binary, no kiln build needed. Each variant is checked against a host fp32 result on a few rows,
// then timed (CUDA events, median of 60, inputs rotated past L2) beside a 1 GiB D2D copy.
//
//   nvcc -O3 -std=c++20 -arch=sm_90a bench/lab/norm_forward_lab.cu -o /tmp/nfl && /tmp/nfl
//
// Variant knobs (all compile time): threads a row (kTpr), 16-byte accesses a thread (kVpt), rows a
// block (kRows), min blocks a SM for __launch_bounds__, weight loaded with x (kEarly) or after the
// reduction, persistent with the next row prefetched into registers (kPersist), and LayerNorm's
// variance by the x[0] shift (kTwoPass = false, kiln's way) or by a second reduction.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "lab_common.cuh"

__device__ __forceinline__ float rsqrt_approx(float v) {
  float r;
  asm("rsqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}

struct Args {
  const bf16* x;
  const bf16* w;
  const bf16* b;
  bf16* y;
  int rows, cols;
  float eps, inv_cols;
};

template <int kTpr, int kVpt, int kRows, int kMinBlocks, bool kLayer, bool kEarly, bool kPersist,
          bool kTwoPass>
__global__ void __launch_bounds__(kTpr* kRows, kMinBlocks) lab_forward(const Args a) {
  __shared__ float scratch[2][kRows * (kTpr / 32) * 2 + 1];
  const int row_step = kPersist ? gridDim.x * kRows : 0;
  int row = blockIdx.x * kRows + threadIdx.y;
  P8 v[kVpt], w[kVpt], bb[kVpt];
  auto load_x = [&](int r, P8(&dst)[kVpt]) {
    const P8* src = reinterpret_cast<const P8*>(a.x + size_t(r) * a.cols);
#pragma unroll
    for (int i = 0; i < kVpt; ++i) dst[i] = src[i * kTpr + threadIdx.x];
  };
  auto load_params = [&] {
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      w[i] = reinterpret_cast<const P8*>(a.w)[i * kTpr + threadIdx.x];
      if constexpr (kLayer) bb[i] = reinterpret_cast<const P8*>(a.b)[i * kTpr + threadIdx.x];
    }
  };
  if (row >= a.rows) return;  // lab: rows % kRows == 0, so whole blocks leave together
  if (kEarly || kPersist) load_params();
  load_x(row, v);
  float shift = 0.f;
  if (kLayer && !kTwoPass) shift = __bfloat162float(a.x[size_t(row) * a.cols]);
  int parity = 0;
  while (true) {
    P8 next[kVpt];
    const int next_row = row + row_step;
    const bool has_next = kPersist && next_row < a.rows;
    if (has_next) load_x(next_row, next);
    float xf[kVpt][8];
#pragma unroll
    for (int i = 0; i < kVpt; ++i) widen8(v[i], xf[i]);
    float mean = 0.f, rstd;
    float* s = scratch[parity];
    if constexpr (kLayer && kTwoPass) {
      float sum[1] = {0.f};
#pragma unroll
      for (int i = 0; i < kVpt; ++i)
#pragma unroll
        for (int k = 0; k < 8; ++k) sum[0] += xf[i][k];
      row_sum<kTpr, 1>(sum, s);
      mean = sum[0] * a.inv_cols;
      float sq[1] = {0.f};
#pragma unroll
      for (int i = 0; i < kVpt; ++i)
#pragma unroll
        for (int k = 0; k < 8; ++k) sq[0] += (xf[i][k] - mean) * (xf[i][k] - mean);
      row_sum<kTpr, 1>(sq, scratch[parity ^ 1] + kRows * (kTpr / 32));
      rstd = rsqrt_approx(sq[0] * a.inv_cols + a.eps);
    } else if constexpr (kLayer) {
      float p[2] = {0.f, 0.f};
#pragma unroll
      for (int i = 0; i < kVpt; ++i)
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const float d = xf[i][k] - shift;
          p[0] += d;
          p[1] += d * d;
        }
      row_sum<kTpr, 2>(p, s);
      const float m = p[0] * a.inv_cols;
      mean = shift + m;
      rstd = rsqrt_approx(fmaxf(p[1] * a.inv_cols - m * m, 0.f) + a.eps);
    } else {
      float p[1] = {0.f};
#pragma unroll
      for (int i = 0; i < kVpt; ++i)
#pragma unroll
        for (int k = 0; k < 8; ++k) p[0] += xf[i][k] * xf[i][k];
      row_sum<kTpr, 1>(p, s);
      rstd = rsqrt_approx(p[0] * a.inv_cols + a.eps);
    }
    parity ^= 1;
    if (!kEarly && !kPersist) load_params();
    P8* dst = reinterpret_cast<P8*>(a.y + size_t(row) * a.cols);
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      float wf[8], out[8];
      widen8(w[i], wf);
      if constexpr (kLayer) {
        float bf[8];
        widen8(bb[i], bf);
#pragma unroll
        for (int k = 0; k < 8; ++k) out[k] = (xf[i][k] - mean) * rstd * wf[k] + bf[k];
      } else {
#pragma unroll
        for (int k = 0; k < 8; ++k) out[k] = xf[i][k] * rstd * wf[k];
      }
      dst[i * kTpr + threadIdx.x] = narrow8(out);
    }
    if (!has_next) break;
    row = next_row;
#pragma unroll
    for (int i = 0; i < kVpt; ++i) v[i] = next[i];
    if (kLayer && !kTwoPass) shift = __bfloat162float(a.x[size_t(row) * a.cols]);
  }
}

struct Variant {
  std::string name;
  int cols;
  bool layer;
  void (*launch)(const Args&, int sms, cudaStream_t);
};

template <int kTpr, int kVpt, int kRows, int kMinBlocks, bool kLayer, bool kEarly, bool kPersist,
          bool kTwoPass>
Variant make(const char* tag) {
  Variant v;
  v.cols = kTpr * kVpt * 8;
  v.layer = kLayer;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s %s tpr%d vpt%d rows%d min%d%s%s%s", kLayer ? "ln " : "rms",
                tag, kTpr, kVpt, kRows, kMinBlocks, kEarly ? " early" : "",
                kPersist ? " persist" : "", kLayer ? (kTwoPass ? " twopass" : " shift") : "");
  v.name = buf;
  v.launch = [](const Args& a, int sms, cudaStream_t s) {
    auto k = lab_forward<kTpr, kVpt, kRows, kMinBlocks, kLayer, kEarly, kPersist, kTwoPass>;
    int grid = a.rows / kRows;
    if (kPersist) {
      int per_sm = 0;
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, kTpr * kRows, 0);
      grid = std::min(grid, sms * per_sm);
    }
    k<<<grid, dim3(kTpr, kRows), 0, s>>>(a);
  };
  return v;
}

// Every variant of one (kind, N): threads a row, accesses, rows a block, bounds, early, persist.
template <bool kL, int kN>
void add_variants(std::vector<Variant>& vs) {
  constexpr int kV = kN / 8;  // 16-byte accesses a row
  // kiln today: 512-thread blocks, 1 access (2 at N = 8192), late weight.
  if constexpr (kV >= 512) {
    vs.push_back(make < 512, kV / 512, 1, kV / 512 == 1 ? 4 : 3, kL, false, false,
                 false > ("kiln"));
    vs.push_back(make < 512, kV / 512, 1, kV / 512 == 1 ? 4 : 3, kL, true, false, false > ("kiln"));
    vs.push_back(make<512, kV / 512, 1, 2, kL, false, false, false>("kiln"));
  } else {
    vs.push_back(make<kV, 1, 512 / kV, 4, kL, false, false, false>("kiln"));
    vs.push_back(make<kV, 1, 512 / kV, 4, kL, true, false, false>("kiln"));
  }
  // Triton-like: one row a block, 2 accesses a thread, weight with x.
  vs.push_back(make < kV / 2, 2, 1, 2048 / (kV / 2) >= 8 ? 8 : 2048 / (kV / 2), kL, true, false,
               false > ("triton"));
  vs.push_back(make < kV / 2, 2, 1, 2048 / (kV / 2) >= 8 ? 6 : 2048 / (kV / 2) * 3 / 4, kL, true,
               false, false > ("triton"));
  vs.push_back(make < kV / 2, 2, 1, 2048 / (kV / 2) >= 8 ? 6 : 2048 / (kV / 2) * 3 / 4, kL, false,
               false, false > ("triton"));
  // One row a block, 1 access.
  if constexpr (kV <= 1024) {
    vs.push_back(make<kV, 1, 1, 2048 / kV, kL, true, false, false>("row"));
    vs.push_back(make<kV, 1, 1, 2048 / kV, kL, false, false, false>("row"));
  }
  // 4 accesses a thread.
  vs.push_back(make < kV / 4, 4, 1, 2048 / (kV / 4) >= 8 ? 8 : 4, kL, true, false,
               false > ("wide"));
  // Persistent, next row in registers.
  if constexpr (kV <= 1024) {
    vs.push_back(make<kV, 1, 1, 2048 / kV, kL, false, true, false>("pers"));
  }
  vs.push_back(make < kV / 2, 2, 1, 2048 / (kV / 2) >= 8 ? 6 : 2048 / (kV / 2) * 3 / 4, kL, false,
               true, false > ("pers"));
  if constexpr (kL) {
    vs.push_back(make < kV / 2, 2, 1, 2048 / (kV / 2) >= 8 ? 6 : 2048 / (kV / 2) * 3 / 4, kL, true,
                 false, true > ("triton"));
    if constexpr (kV >= 512) {
      vs.push_back(make < 512, kV / 512, 1, kV / 512 == 1 ? 4 : 3, kL, false, false,
                   true > ("kiln"));
    } else {
      vs.push_back(make<kV, 1, 512 / kV, 4, kL, false, false, true>("kiln"));
    }
  }
}

static float bf(float f) {
  return __bfloat162float(__float2bfloat16_rn(f));
}

int main() {
  const int rows = 16384, sets = 4, reps = 60;
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# norm forward lab: %s, %d SMs, M = %d, bf16, median of %d\n", prop.name, sms, rows,
              reps);
  LabTimer timer;
  const cudaStream_t st = timer.stream;
  timer.print_copy_ceiling();
  std::vector<Variant> vs;
  add_variants<false, 2048>(vs);
  add_variants<false, 4096>(vs);
  add_variants<false, 8192>(vs);
  add_variants<true, 2048>(vs);
  add_variants<true, 4096>(vs);
  add_variants<true, 8192>(vs);
  for (int cols : {2048, 4096, 8192}) {
    const size_t n = size_t(rows) * cols;
    std::vector<bf16> hx(n), hw(cols), hb(cols);
    uint32_t seed = 12345 + cols;
    auto rnd = [&] {
      seed = seed * 1664525u + 1013904223u;
      return (seed >> 8) * (1.f / 16777216.f) * 2.f - 1.f;
    };
    for (size_t i = 0; i < n; ++i) hx[i] = __float2bfloat16_rn(rnd() * 2.f + 0.5f);
    for (int i = 0; i < cols; ++i) {
      hw[i] = __float2bfloat16_rn(1.f + 0.5f * rnd());
      hb[i] = __float2bfloat16_rn(0.2f * rnd());
    }
    bf16 *dx, *dy, *dw, *db;
    CHECK(cudaMalloc(&dx, n * 2 * sets));
    CHECK(cudaMalloc(&dy, n * 2 * sets));
    CHECK(cudaMalloc(&dw, cols * 2));
    CHECK(cudaMalloc(&db, cols * 2));
    for (int s = 0; s < sets; ++s)
      CHECK(cudaMemcpy(dx + s * n, hx.data(), n * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dw, hw.data(), cols * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, hb.data(), cols * 2, cudaMemcpyHostToDevice));
    std::vector<bf16> hy(n);
    for (const Variant& v : vs) {
      if (v.cols != cols) continue;
      Args a{dx, dw, db, dy, rows, cols, 1e-5f, 1.f / cols};
      CHECK(cudaMemset(dy, 0xff, n * 2));  // NaN poison
      v.launch(a, sms, st);
      CHECK(cudaStreamSynchronize(st));
      CHECK(cudaGetLastError());
      CHECK(cudaMemcpy(hy.data(), dy, n * 2, cudaMemcpyDeviceToHost));
      double worst = 0;
      for (int r : {0, 1, 777, rows / 2 + 3, rows - 1}) {
        double s1 = 0, s2 = 0;
        for (int c = 0; c < cols; ++c) {
          const double xv = __bfloat162float(hx[size_t(r) * cols + c]);
          s1 += xv;
          s2 += xv * xv;
        }
        const double mean = v.layer ? s1 / cols : 0.0;
        const double var = v.layer ? s2 / cols - mean * mean : s2 / cols;
        const double rstd = 1.0 / std::sqrt(var + 1e-5);
        for (int c = 0; c < cols; ++c) {
          const double xv = __bfloat162float(hx[size_t(r) * cols + c]);
          double ref = (xv - mean) * rstd * __bfloat162float(hw[c]);
          if (v.layer) ref += __bfloat162float(hb[c]);
          const double got = __bfloat162float(hy[size_t(r) * cols + c]);
          const double err = std::fabs(got - ref) / (1.0 + std::fabs(ref));
          worst = std::isnan(got) ? 1e9 : std::max(worst, err);
        }
      }
      const float ms = timer.median_ms(
          [&](int i) {
            const int s = i % sets;
            v.launch(Args{dx + s * n, dw, db, dy + s * n, rows, cols, 1e-5f, 1.f / cols}, sms, st);
          },
          reps);
      const double bytes = 2.0 * n * 2 + cols * 2 * (v.layer ? 2 : 1);
      std::printf("N %5d  %-44s %8.4f ms %6.0f GB/s  err %.1e%s\n", cols, v.name.c_str(), ms,
                  bytes / ms / 1e6, worst, worst > 2e-2 ? "  WRONG" : "");
    }
    CHECK(cudaFree(dx));
    CHECK(cudaFree(dy));
    CHECK(cudaFree(dw));
    CHECK(cudaFree(db));
  }
  (void)bf;
  return 0;
}
