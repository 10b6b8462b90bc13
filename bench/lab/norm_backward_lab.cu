// Lab (H100): LayerNorm / RMSNorm backward launch shapes side by side, bf16 x and dy, bf16
// weight, M = 16384 rows, one binary, no kiln build. Each variant is checked against a host
// float64 result (dx on a few rows, dweight and dbias on a few columns), then timed (CUDA events,
// median of 40, inputs rotated past L2) beside a 1 GiB D2D copy. The time includes the fold of
// the per-block dweight/dbias partials.
//
//   nvcc -O3 -std=c++20 -arch=sm_90a bench/lab/norm_backward_lab.cu -o /tmp/nbl && /tmp/nbl
//
// Knobs (compile time): threads a row (kTpr), 16-byte accesses a thread (kVpt), rows a block
// (kRows), min blocks a SM (launch bounds), rows walked in a contiguous chunk a block or strided
// across the grid (kChunk), the next row's x and dy prefetched into registers (kPrefetch), and the
// block's rows folded in shared memory into one partial a block (kFoldRows; else one partial a
// row slot), and the next row staged by cp.async in shared memory as kiln does (kStage; on the
// H100, s11: within 2% of the register prefetch, or faster, at every N but LayerNorm 2048 (0.1075
// against 0.0831 ms). Yet kiln's own register form lost to its staging everywhere, LayerNorm 2048
// included (0.1310 against 0.0912 ms), so what else in the port costs it is still open).
// kiln (2026-11-22): persistent, 512 threads, LayerNorm 2 accesses, the next row staged by
// cp.async, one partial a row slot: 62 / 72 / 79 % of copy at N = 2048 / 4096 / 8192.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../../src/cuda/common/cp_async.cuh"
#include "lab_common.cuh"

struct Args {
  const bf16* x;
  const bf16* dy;
  const bf16* w;
  bf16* dx;
  float* dw_part;  // [slots, cols]
  float* db_part;
  bf16* dw;
  bf16* db;
  int rows, cols;
  float eps, inv_cols;
};

template <int kTpr, int kVpt, int kRows, int kMin, bool kLayer, bool kChunk, bool kPrefetch,
          bool kFoldRows, bool kWeightGlobal = false, bool kStage = false>
__global__ void __launch_bounds__(kTpr* kRows, kMin) lab_backward(const Args a) {
  __shared__ float scratch[2][kRows * (kTpr / 32) * 4];
  // Folding the block's rows: [kRows][kTpr * kVpt * 8] floats would not fit for wide rows, so
  // rows fold pairwise through one row-sized buffer a time (kRows - 1 barriers).
  extern __shared__ float fold[];
  const int slots = gridDim.x * kRows;
  const int slot = blockIdx.x * kRows + threadIdx.y;
  // Rows of this slot: chunk = [slot * per, (slot + 1) * per); strided = slot, slot + slots, ...
  const int per = (a.rows + slots - 1) / slots;
  int row = kChunk ? slot * per : slot;
  const int end = kChunk ? min(a.rows, row + per) : a.rows;
  const int step = kChunk ? 1 : slots;
  float dw[kVpt][8] = {}, db[kVpt][8] = {};
  // kWeightGlobal: the weight re-read from global memory where it is used (both passes), as
  // kiln's kernel does, instead of held in registers: the bisection of kiln's port (s8).
  float wf[kVpt][8];
  auto load_weight = [&] {
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      P8 wp = reinterpret_cast<const P8*>(a.w)[i * kTpr + threadIdx.x];
      widen8(wp, wf[i]);
    }
  };
  load_weight();
  // kStage: the next row's x and dy copied by cp.async into a two-buffer ring in the dynamic
  // shared memory (kiln's RowStage), read back by the thread that copied them; the fold reuses
  // the memory after the loop. Else (kPrefetch) into registers.
  auto stage_slot = [&](int buf, int tensor, int i) {
    return reinterpret_cast<uint4*>(fold) +
           ((((buf * kRows + threadIdx.y) * 2 + tensor) * kVpt + i) * kTpr + threadIdx.x);
  };
  auto stage_fetch = [&](int r, int buf) {
    const uint4* xs = reinterpret_cast<const uint4*>(a.x + size_t(r) * a.cols);
    const uint4* gs = reinterpret_cast<const uint4*>(a.dy + size_t(r) * a.cols);
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      kiln::cuda::cp_async16(stage_slot(buf, 0, i), xs + i * kTpr + threadIdx.x);
      kiln::cuda::cp_async16(stage_slot(buf, 1, i), gs + i * kTpr + threadIdx.x);
    }
    kiln::cuda::cp_async_commit();
  };
  int buf = 0;
  P8 xv[kVpt], gv[kVpt];
  auto load = [&](int r, P8(&xd)[kVpt], P8(&gd)[kVpt]) {
    const P8* xs = reinterpret_cast<const P8*>(a.x + size_t(r) * a.cols);
    const P8* gs = reinterpret_cast<const P8*>(a.dy + size_t(r) * a.cols);
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      xd[i] = xs[i * kTpr + threadIdx.x];
      gd[i] = gs[i * kTpr + threadIdx.x];
    }
  };
  // Every thread of the block runs the same number of iterations (barriers inside): rows past
  // `end` are computed on row 0's data and not stored.
  const int iters = kChunk ? per : (a.rows + slots - 1) / slots;
  if (iters > 0) {
    if constexpr (kStage) {
      stage_fetch(row < end ? row : 0, 0);
    } else {
      load(row < end ? row : 0, xv, gv);
    }
  }
  int parity = 0;
  for (int it = 0; it < iters; ++it) {
    const bool live = row < end;
    P8 xn[kVpt], gn[kVpt];
    const int next = row + step;
    if constexpr (kStage) {
      kiln::cuda::cp_async_wait<0>();
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        xv[i] = *reinterpret_cast<const P8*>(stage_slot(buf, 0, i));
        gv[i] = *reinterpret_cast<const P8*>(stage_slot(buf, 1, i));
      }
      if (it + 1 < iters) stage_fetch(next < end ? next : 0, buf ^ 1);
      buf ^= 1;
    } else if (kPrefetch && it + 1 < iters) {
      load(next < end ? next : 0, xn, gn);
    }
    if constexpr (kWeightGlobal) load_weight();
    float xf[kVpt][8], gf[kVpt][8];
    float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      widen8(xv[i], xf[i]);
      widen8(gv[i], gf[i]);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float wdy = wf[i][k] * gf[i][k];
        s[0] += xf[i][k];
        s[1] += xf[i][k] * xf[i][k];
        s[2] += wdy;
        s[3] += xf[i][k] * wdy;
      }
    }
    float* sc = scratch[parity];
    parity ^= 1;
    float mean = 0.f, rstd, mean_wdy = 0.f, mean_xhat_wdy;
    if constexpr (kLayer) {
      row_sum<kTpr, 4>(s, sc);
      mean = s[0] * a.inv_cols;
      rstd = rsqrtf(fmaxf(s[1] * a.inv_cols - mean * mean, 0.f) + a.eps);
      mean_wdy = s[2] * a.inv_cols;
      mean_xhat_wdy = rstd * (s[3] - mean * s[2]) * a.inv_cols;
    } else {
      float p[2] = {s[1], s[3]};
      row_sum<kTpr, 2>(p, sc);
      rstd = rsqrtf(p[0] * a.inv_cols + a.eps);
      mean_xhat_wdy = rstd * p[1] * a.inv_cols;
    }
    if constexpr (kWeightGlobal) load_weight();
    if (live) {
      P8* dxr = reinterpret_cast<P8*>(a.dx + size_t(row) * a.cols);
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        float out[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const float xhat = (xf[i][k] - mean) * rstd;
          dw[i][k] += gf[i][k] * xhat;
          if constexpr (kLayer) db[i][k] += gf[i][k];
          out[k] = rstd * (wf[i][k] * gf[i][k] - mean_wdy - xhat * mean_xhat_wdy);
        }
        dxr[i * kTpr + threadIdx.x] = narrow8(out);
      }
    }
    if constexpr (!kStage) {
      if (!kPrefetch && it + 1 < iters) load(next < end ? next : 0, xn, gn);
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        xv[i] = xn[i];
        gv[i] = gn[i];
      }
    }
    row = next;
  }
  // Partials: one a row slot, or the block's rows folded into one a block.
  const int cols_per_row = kTpr * kVpt * 8;
  auto col = [&](int i, int k) { return (i * kTpr + threadIdx.x) * 8 + k; };
  if constexpr (kFoldRows && kRows > 1) {
    for (int r = kRows - 1; r > 0; --r) {
      __syncthreads();
      if (threadIdx.y == r) {
#pragma unroll
        for (int i = 0; i < kVpt; ++i)
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            fold[col(i, k)] = dw[i][k];
            if (kLayer) fold[cols_per_row + col(i, k)] = db[i][k];
          }
      }
      __syncthreads();
      if (threadIdx.y == r - 1) {
#pragma unroll
        for (int i = 0; i < kVpt; ++i)
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            dw[i][k] += fold[col(i, k)];
            if (kLayer) db[i][k] += fold[cols_per_row + col(i, k)];
          }
      }
    }
    if (threadIdx.y != 0) return;
  }
  const int out_slot = kFoldRows ? blockIdx.x : slot;
  float* dwp = a.dw_part + size_t(out_slot) * a.cols;
  float* dbp = a.db_part + size_t(out_slot) * a.cols;
#pragma unroll
  for (int i = 0; i < kVpt; ++i) {
    reinterpret_cast<float4*>(dwp + col(i, 0))[0] =
        make_float4(dw[i][0], dw[i][1], dw[i][2], dw[i][3]);
    reinterpret_cast<float4*>(dwp + col(i, 0))[1] =
        make_float4(dw[i][4], dw[i][5], dw[i][6], dw[i][7]);
    if (kLayer) {
      reinterpret_cast<float4*>(dbp + col(i, 0))[0] =
          make_float4(db[i][0], db[i][1], db[i][2], db[i][3]);
      reinterpret_cast<float4*>(dbp + col(i, 0))[1] =
          make_float4(db[i][4], db[i][5], db[i][6], db[i][7]);
    }
  }
}

// out[c] = sum over slots of part[slot, c] in slot order; a thread a column.
__global__ void fold_kernel(const float* dw_part, const float* db_part, int slots, int cols,
                            bf16* dw, bf16* db) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const float* part = blockIdx.y == 0 ? dw_part : db_part;
  float s = 0.f;
  for (int k = 0; k < slots; ++k) s += part[size_t(k) * cols + c];
  (blockIdx.y == 0 ? dw : db)[c] = __float2bfloat16_rn(s);
}

struct Variant {
  std::string name;
  int cols;
  bool layer;
  // Launches the backward and the fold; returns nothing.
  void (*launch)(const Args&, int sms, cudaStream_t);
};

template <int kTpr, int kVpt, int kRows, int kMin, bool kLayer, bool kChunk, bool kPrefetch,
          bool kFoldRows, bool kWeightGlobal = false, bool kStage = false>
Variant make(const char* tag) {
  Variant v;
  v.cols = kTpr * kVpt * 8;
  v.layer = kLayer;
  char buf[200];
  std::snprintf(buf, sizeof buf, "%s %s tpr%d vpt%d rows%d min%d%s%s%s%s%s", kLayer ? "ln " : "rms",
                tag, kTpr, kVpt, kRows, kMin, kChunk ? " chunk" : " strided",
                kPrefetch ? " prefetch" : "", kFoldRows ? " foldrows" : "",
                kWeightGlobal ? " wglobal" : "", kStage ? " stage" : "");
  v.name = buf;
  v.launch = [](const Args& a, int sms, cudaStream_t s) {
    auto k = lab_backward<kTpr, kVpt, kRows, kMin, kLayer, kChunk, kPrefetch, kFoldRows,
                          kWeightGlobal, kStage>;
    const size_t stage_bytes = kStage ? size_t(2) * kRows * 2 * kVpt * kTpr * 16 : 0;
    const size_t fold_bytes =
        std::max(stage_bytes, kFoldRows && kRows > 1 ? size_t(2) * kTpr * kVpt * 8 * 4 : size_t(0));
    if (fold_bytes > 48 * 1024) {
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(fold_bytes));
    }
    int per_sm = 0;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, kTpr * kRows, fold_bytes);
    const int grid = std::max(1, std::min(sms * per_sm, (a.rows + kRows - 1) / kRows));
    k<<<grid, dim3(kTpr, kRows), fold_bytes, s>>>(a);
    const int slots = kFoldRows ? grid : grid * kRows;
    fold_kernel<<<dim3((a.cols + 255) / 256, kLayer ? 2 : 1), 256, 0, s>>>(
        a.dw_part, a.db_part, slots, a.cols, a.dw, a.db);
  };
  return v;
}

// Min blocks a SM for __launch_bounds__: 1 lets registers decide the occupancy (measured by
// cudaOccupancy at launch); kCap80 caps registers near 80 a thread (more blocks, maybe spills).
template <int kThreads>
constexpr int kCap80 = 65536 / (kThreads * 80) > 1 ? 65536 / (kThreads * 80) : 1;

template <bool kL, int kN>
void add_variants(std::vector<Variant>& vs) {
  constexpr int kV = kN / 8;  // 16-byte accesses a row
  // kiln's shape today (2 accesses, 512 threads, strided rows, a partial a slot), without its
  // cp.async staging: the baseline; then with prefetch, folded rows, contiguous chunks.
  if constexpr (kV / 2 <= 512) {
    constexpr int kR = 512 / (kV / 2);
    vs.push_back(make<kV / 2, 2, kR, 1, kL, false, false, false>("kiln-like"));
    vs.push_back(make<kV / 2, 2, kR, 1, kL, false, true, false>("kiln-like"));
    vs.push_back(make<kV / 2, 2, kR, 1, kL, false, true, true>("kiln-like"));
    vs.push_back(make<kV / 2, 2, kR, 1, kL, true, true, true>("kiln-like"));
    // kiln's port of the best shape read the weight from global memory a pass and was slower
    // than the old kernel (s8): the same shape with that one difference.
    vs.push_back(make<kV / 2, 2, kR, 1, kL, false, true, true, true>("kiln-like"));
    // kiln's staging (cp.async into shared memory): kiln's port of the prefetch foldrows shape
    // ran 4% (rms) and 10% (ln) slower than the lab's at N = 2048 (s10).
    vs.push_back(make<kV / 2, 2, kR, 1, kL, false, false, true, true, true>("kiln-like"));
  }
  // One row a block, 2 accesses, contiguous chunks (Liger's shape), with and without prefetch.
  vs.push_back(make<kV / 2, 2, 1, 1, kL, true, true, false>("row"));
  vs.push_back(make<kV / 2, 2, 1, 1, kL, true, false, false>("row"));
  vs.push_back(make<kV / 2, 2, 1, kCap80<kV / 2>, kL, true, true, false>("row cap80"));
  // One access a thread: half the registers for the accumulators, twice the threads.
  if constexpr (kV <= 1024) {
    vs.push_back(make<kV, 1, 1, 1, kL, true, true, false>("row1"));
    vs.push_back(make<kV, 1, 1, kCap80<kV>, kL, true, true, false>("row1 cap80"));
  }
  if constexpr (kV <= 256) {
    vs.push_back(make<kV, 1, 512 / kV, 1, kL, true, true, true>("row1"));
  }
  // 4 accesses a thread: fewer threads, more bytes in flight each.
  vs.push_back(make<kV / 4, 4, 1, 1, kL, true, true, false>("wide"));
  vs.push_back(make<kV / 4, 4, 1, 1, kL, true, false, false>("wide"));
}

int main() {
  const int rows = 16384, sets = 3, reps = 40;
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# norm backward lab: %s, %d SMs, M = %d, bf16, median of %d\n", prop.name, sms, rows,
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
    std::vector<bf16> hx(n), hg(n), hw(cols);
    uint32_t seed = 777 + cols;
    auto rnd = [&] {
      seed = seed * 1664525u + 1013904223u;
      return (seed >> 8) * (1.f / 16777216.f) * 2.f - 1.f;
    };
    for (size_t i = 0; i < n; ++i) {
      hx[i] = __float2bfloat16_rn(rnd() * 2.f + 0.3f);
      hg[i] = __float2bfloat16_rn(rnd());
    }
    for (int i = 0; i < cols; ++i) hw[i] = __float2bfloat16_rn(1.f + 0.5f * rnd());
    bf16 *dx_in, *dg, *dw_in, *ddx, *ddw, *ddb;
    float *pw, *pb;
    const size_t max_slots = size_t(sms) * 32;
    CHECK(cudaMalloc(&dx_in, n * 2 * sets));
    CHECK(cudaMalloc(&dg, n * 2 * sets));
    CHECK(cudaMalloc(&ddx, n * 2 * sets));
    CHECK(cudaMalloc(&dw_in, cols * 2));
    CHECK(cudaMalloc(&ddw, cols * 2));
    CHECK(cudaMalloc(&ddb, cols * 2));
    CHECK(cudaMalloc(&pw, max_slots * cols * 4));
    CHECK(cudaMalloc(&pb, max_slots * cols * 4));
    for (int s = 0; s < sets; ++s) {
      CHECK(cudaMemcpy(dx_in + s * n, hx.data(), n * 2, cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(dg + s * n, hg.data(), n * 2, cudaMemcpyHostToDevice));
    }
    CHECK(cudaMemcpy(dw_in, hw.data(), cols * 2, cudaMemcpyHostToDevice));
    // Host float64: per-row stats and dx for a few rows; dweight/dbias for a few columns.
    auto f = [](bf16 v) { return double(__bfloat162float(v)); };
    const std::vector<int> check_rows{0, 1, 4097, rows - 1};
    const std::vector<int> check_cols{0, 7, cols / 2 + 3, cols - 1};
    for (bool layer : {false, true}) {
      std::vector<double> want_dw(check_cols.size()), want_db(check_cols.size());
      std::vector<std::vector<double>> want_dx;
      for (int r = 0; r < rows; ++r) {
        double s1 = 0, s2 = 0;
        for (int c = 0; c < cols; ++c) {
          s1 += f(hx[size_t(r) * cols + c]);
          s2 += f(hx[size_t(r) * cols + c]) * f(hx[size_t(r) * cols + c]);
        }
        const double mean = layer ? s1 / cols : 0.0;
        const double var = layer ? s2 / cols - mean * mean : s2 / cols;
        const double rstd = 1.0 / std::sqrt(var + 1e-5);
        for (size_t j = 0; j < check_cols.size(); ++j) {
          const int c = check_cols[j];
          const double xhat = (f(hx[size_t(r) * cols + c]) - mean) * rstd;
          want_dw[j] += f(hg[size_t(r) * cols + c]) * xhat;
          want_db[j] += f(hg[size_t(r) * cols + c]);
        }
        if (std::find(check_rows.begin(), check_rows.end(), r) != check_rows.end()) {
          double m1 = 0, m2 = 0;
          for (int c = 0; c < cols; ++c) {
            const double xhat = (f(hx[size_t(r) * cols + c]) - mean) * rstd;
            const double wdy = f(hw[c]) * f(hg[size_t(r) * cols + c]);
            m1 += wdy;
            m2 += xhat * wdy;
          }
          m1 = layer ? m1 / cols : 0.0;
          m2 /= cols;
          std::vector<double> dxr(cols);
          for (int c = 0; c < cols; ++c) {
            const double xhat = (f(hx[size_t(r) * cols + c]) - mean) * rstd;
            dxr[c] = rstd * (f(hw[c]) * f(hg[size_t(r) * cols + c]) - m1 - xhat * m2);
          }
          want_dx.push_back(dxr);
        }
      }
      std::vector<bf16> got_dx(n), got_dw(cols), got_db(cols);
      for (const Variant& v : vs) {
        if (v.cols != cols || v.layer != layer) continue;
        Args a{dx_in, dg, dw_in, ddx, pw, pb, ddw, ddb, rows, cols, 1e-5f, 1.f / cols};
        CHECK(cudaMemset(ddx, 0xff, n * 2));
        CHECK(cudaMemset(ddw, 0xff, cols * 2));
        CHECK(cudaMemset(ddb, 0xff, cols * 2));
        v.launch(a, sms, st);
        CHECK(cudaStreamSynchronize(st));
        CHECK(cudaGetLastError());
        CHECK(cudaMemcpy(got_dx.data(), ddx, n * 2, cudaMemcpyDeviceToHost));
        CHECK(cudaMemcpy(got_dw.data(), ddw, cols * 2, cudaMemcpyDeviceToHost));
        CHECK(cudaMemcpy(got_db.data(), ddb, cols * 2, cudaMemcpyDeviceToHost));
        double worst = 0;
        for (size_t i = 0; i < check_rows.size(); ++i)
          for (int c = 0; c < cols; ++c) {
            const double g = f(got_dx[size_t(check_rows[i]) * cols + c]);
            const double err = std::fabs(g - want_dx[i][c]) / (1.0 + std::fabs(want_dx[i][c]));
            worst = std::isnan(g) ? 1e9 : std::max(worst, err);
          }
        for (size_t j = 0; j < check_cols.size(); ++j) {
          const double gw = f(got_dw[check_cols[j]]);
          const double scale = 1.0 + std::sqrt(double(rows));
          worst = std::isnan(gw) ? 1e9 : std::max(worst, std::fabs(gw - want_dw[j]) / scale);
          if (layer) {
            const double gb = f(got_db[check_cols[j]]);
            worst = std::isnan(gb) ? 1e9 : std::max(worst, std::fabs(gb - want_db[j]) / scale);
          }
        }
        const float ms = timer.median_ms(
            [&](int i) {
              const int s = i % sets;
              Args ai = a;
              ai.x = dx_in + s * n;
              ai.dy = dg + s * n;
              ai.dx = ddx + s * n;
              v.launch(ai, sms, st);
            },
            reps);
        // kiln's byte count: x, dy read, dx written, weight read, dweight (+ dbias) written.
        const double bytes = 3.0 * n * 2 + cols * 2.0 * (layer ? 3 : 2);
        std::printf("N %5d  %-58s %8.4f ms %6.0f GB/s  err %.1e%s\n", cols, v.name.c_str(), ms,
                    bytes / ms / 1e6, worst, worst > 3e-2 ? "  WRONG" : "");
      }
    }
    for (void* p : {(void*)dx_in, (void*)dg, (void*)ddx, (void*)dw_in, (void*)ddw, (void*)ddb,
                    (void*)pw, (void*)pb})
      CHECK(cudaFree(p));
  }
  return 0;
}
