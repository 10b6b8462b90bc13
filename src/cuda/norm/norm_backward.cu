// RMSNorm / LayerNorm backward: dx per row, dweight/dbias as a deterministic column sum.
// Bytes: x, dy (+ dresidual) read once, dx written once; plus blocks x cols fp32 partials written
// and folded (blocks ~ SMs x occupancy, about 1 % at M = 16k).
// The row statistics are recomputed from x (no saved rstd/mean needed).
#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/elements.cuh"
#include "cuda/norm/norm_args.h"
#include "cuda/norm/norm_config.h"
#include "cuda/norm/norm_launch.h"
#include "cuda/norm/norm_launch_common.h"
#include "cuda/norm/row_reduce.cuh"

namespace kiln::cuda {
namespace {

template <typename T, typename P, int kW>
struct BackwardRow {
  const NormBackwardArgs& a;
  const T* dy;
  const T* x;
  const T* dresidual;
  T* dx;

  __device__ __forceinline__ void weight(int c, float (&w)[kW]) const {
    if (a.weight) {
      load_floats<P, kW>(static_cast<const P*>(a.weight) + c, w);
    } else {
#pragma unroll
      for (int k = 0; k < kW; ++k) w[k] = 1.f;
    }
  }

  __device__ __forceinline__ void load_dresidual(int c, float (&dr)[kW]) const {
    if (dresidual) {
      load_floats<T, kW>(dresidual + c, dr);
    } else {
#pragma unroll
      for (int k = 0; k < kW; ++k) dr[k] = 0.f;
    }
  }

  // dx = rstd * (w*dy - mean_wdy - xhat * mean_xhat_wdy) + dresidual.
  __device__ __forceinline__ void store_dx(int c, const float (&xv)[kW], const float (&g)[kW],
                                           const float (&dr)[kW], float mean, float rstd,
                                           float mean_wdy, float mean_xhat_wdy) const {
    float w[kW], out[kW];
    weight(c, w);
#pragma unroll
    for (int k = 0; k < kW; ++k) {
      const float xhat = (xv[k] - mean) * rstd;
      out[k] = rstd * (w[k] * g[k] - mean_wdy - xhat * mean_xhat_wdy) + dr[k];
    }
    store_floats<T, kW>(dx + c, out);
  }
};

// One row's packs of x, dy and dresidual, in their own dtype (half the registers of fp32 for
// bf16/f16). Columns past the row (and rows past the matrix) hold zeros.
template <typename T, int kW, int kVpt>
struct RowPacks {
  Pack<T, kW> x[kVpt], dy[kVpt], dr[kVpt];

  __device__ __forceinline__ void load(const NormBackwardArgs& a, int64_t row) {
    const bool active = row < a.rows;
    const T* xs = static_cast<const T*>(a.x) + row * a.x_stride;
    const T* gs = static_cast<const T*>(a.dy) + row * a.dy_stride;
    const T* rs =
        a.dresidual ? static_cast<const T*>(a.dresidual) + row * a.dresidual_stride : nullptr;
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      const int c = (i * blockDim.x + threadIdx.x) * kW;
      if (active && c < a.cols) {
        x[i] = *reinterpret_cast<const Pack<T, kW>*>(xs + c);
        dy[i] = *reinterpret_cast<const Pack<T, kW>*>(gs + c);
        if (rs) dr[i] = *reinterpret_cast<const Pack<T, kW>*>(rs + c);
      } else {
        x[i] = dy[i] = dr[i] = splat<T, kW>(0.f);
      }
    }
  }
};

template <typename T, typename P, bool kLayer, int kW, int kVpt>
__global__ void __launch_bounds__(kNormBackwardThreads)
    norm_backward_kernel(const __grid_constant__ NormBackwardArgs a) {
  // Two halves, used by alternate rows, so the reduction needs no trailing barrier.
  __shared__ __align__(16) float scratch[2][4 * kNormBackwardThreads / 32];
  const int tpr = blockDim.x;
  const int scratch_offset = threadIdx.y * (tpr / 32) * 4;
  int parity = 0;
  const float inv_cols = a.inv_cols;
  const bool want_dw = a.dweight_partial != nullptr, want_db = a.dbias_partial != nullptr;
  const int64_t first_base = int64_t{blockIdx.x} * blockDim.y;
  const int64_t row_step = int64_t{gridDim.x} * blockDim.y;

  if constexpr (kVpt > 0) {
    float dw[kVpt][kW] = {}, db[kVpt][kW] = {};
    // The next row's x, dy (and dresidual) are loaded into registers while this row is reduced
    // and written, so the block keeps DRAM busy through its barriers. Measured on the H100
    // (bench/lab/norm_backward_lab.cu, bf16, M = 16384): register prefetch and one partial a
    // block reached 83 / 88 / 92 % of copy at N = 2048 / 4096 / 8192, where cp.async staging
    // and a partial a row slot reached 62 / 72 / 79 %.
    // LayerNorm's shift (the row's first x) is loaded a row ahead too: as a plain load at use
    // time its latency sat exposed in front of every row's reduction.
    auto shift_of = [&](int64_t row) {
      return kLayer && row < a.rows ? static_cast<const T*>(a.x)[row * a.x_stride]
                                    : from_float<T>(0.f);
    };
    RowPacks<T, kW, kVpt> cur;
    cur.load(a, first_base + threadIdx.y);
    T cur_shift = shift_of(first_base + threadIdx.y);
    for (int64_t base = first_base; base < a.rows; base += row_step) {
      const int64_t row = base + threadIdx.y;
      const bool active = row < a.rows;
      RowPacks<T, kW, kVpt> next;
      next.load(a, row + row_step);
      const T next_shift = shift_of(row + row_step);
      const float shift = to_float(cur_shift);
      bool valid[kVpt];
#pragma unroll
      for (int i = 0; i < kVpt; ++i) valid[i] = active && (i * tpr + threadIdx.x) * kW < a.cols;
      // One reduction per row. With d = x - shift (shift = x[0] for LayerNorm, 0 for RMSNorm)
      // and wdy = w * dy: sums = {sum d, sum d^2, sum wdy, sum d * wdy}, from which
      //   mean = shift + E[d], var = E[d^2] - E[d]^2, sum(xhat * wdy) = rstd (sum d*wdy - E[d] sum
      //   wdy).
      const BackwardRow<T, P, kW> io{a, nullptr, nullptr, nullptr,
                                     static_cast<T*>(a.dx) + (active ? row : 0) * a.dx_stride};
      float sums[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        if (!valid[i]) continue;
        float w[kW];
        io.weight((i * tpr + threadIdx.x) * kW, w);
        float xf[kW], gf[kW];
        widen(cur.x[i], xf);
        widen(cur.dy[i], gf);
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          const float d = xf[k] - shift;
          const float wdy = w[k] * gf[k];
          sums[0] += d;
          sums[1] += d * d;
          sums[2] += wdy;
          sums[3] += d * wdy;
        }
      }
      float* row_scratch = scratch[parity] + scratch_offset;
      parity ^= 1;
      float mean = 0.f, rstd, mean_wdy = 0.f, mean_xhat_wdy;
      if constexpr (kLayer) {
        row_sum<4, false>(sums, row_scratch);
        const float m = sums[0] * inv_cols;
        mean = shift + m;
        rstd = rsqrtf(fmaxf(sums[1] * inv_cols - m * m, 0.f) + a.eps);
        mean_wdy = sums[2] * inv_cols;
        mean_xhat_wdy = rstd * (sums[3] - m * sums[2]) * inv_cols;
      } else {
        float pair[2] = {sums[1], sums[3]};
        row_sum<2, false>(pair, row_scratch);
        rstd = rsqrtf(pair[0] * inv_cols + a.eps);
        mean_xhat_wdy = rstd * pair[1] * inv_cols;
      }
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        if (!valid[i]) continue;
        float xf[kW], gf[kW], dr[kW];
        widen(cur.x[i], xf);
        widen(cur.dy[i], gf);
        if (a.dresidual) {
          widen(cur.dr[i], dr);
        } else {
#pragma unroll
          for (int k = 0; k < kW; ++k) dr[k] = 0.f;
        }
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          const float xhat = (xf[k] - mean) * rstd;
          dw[i][k] += gf[k] * xhat;
          if constexpr (kLayer) db[i][k] += gf[k];
        }
        io.store_dx((i * tpr + threadIdx.x) * kW, xf, gf, dr, mean, rstd, mean_wdy, mean_xhat_wdy);
      }
      cur = next;
      cur_shift = next_shift;
    }
    // The block's rows fold pairwise into row 0 through one row-sized shared buffer (last row
    // first, a fixed order), so the block writes one partial and the fold kernel reads grid
    // partials, not grid x rows_per_block: that fold's serial length measured ~10 % of the
    // backward at N = 2048.
    extern __shared__ float fold[];  // [cols] dweight, then [cols] dbias
    auto col = [&](int i, int k) { return (i * tpr + threadIdx.x) * kW + k; };
    for (int r = static_cast<int>(blockDim.y) - 1; r > 0; --r) {
      __syncthreads();
      if (threadIdx.y == r) {
#pragma unroll
        for (int i = 0; i < kVpt; ++i) {
          if (col(i, 0) >= a.cols) continue;
#pragma unroll
          for (int k = 0; k < kW; ++k) {
            fold[col(i, k)] = dw[i][k];
            if constexpr (kLayer) fold[a.cols + col(i, k)] = db[i][k];
          }
        }
      }
      __syncthreads();
      if (threadIdx.y == r - 1) {
#pragma unroll
        for (int i = 0; i < kVpt; ++i) {
          if (col(i, 0) >= a.cols) continue;
#pragma unroll
          for (int k = 0; k < kW; ++k) {
            dw[i][k] += fold[col(i, k)];
            if constexpr (kLayer) db[i][k] += fold[a.cols + col(i, k)];
          }
        }
      }
    }
    if (threadIdx.y != 0) return;
    float* dw_out = want_dw ? a.dweight_partial + int64_t{blockIdx.x} * a.cols : nullptr;
    float* db_out = want_db ? a.dbias_partial + int64_t{blockIdx.x} * a.cols : nullptr;
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      const int c = col(i, 0);
      if (c >= a.cols) continue;
#pragma unroll
      for (int k = 0; k < kW; ++k) {
        if (want_dw) dw_out[c + k] = dw[i][k];
        if (kLayer && want_db) db_out[c + k] = db[i][k];
      }
    }
  } else {
    // Streaming: the row is re-read (from L2) for each pass, and the dweight/dbias partials
    // live in the slot's workspace row, read-modified-written by the thread that owns the column.
    const int64_t slot = int64_t{blockIdx.x} * blockDim.y + threadIdx.y;
    float* dw_row = want_dw ? a.dweight_partial + slot * a.cols : nullptr;
    float* db_row = want_db ? a.dbias_partial + slot * a.cols : nullptr;
    const int step = tpr * kW;
    const int first = threadIdx.x * kW;
    for (int c = first; c < a.cols; c += step) {
#pragma unroll
      for (int k = 0; k < kW; ++k) {
        if (want_dw) dw_row[c + k] = 0.f;
        if (want_db) db_row[c + k] = 0.f;
      }
    }
    for (int64_t base = first_base; base < a.rows; base += row_step) {
      const int64_t row = base + threadIdx.y;
      const bool active = row < a.rows;
      const int64_t r = active ? row : 0;
      const int end = active ? a.cols : 0;
      const BackwardRow<T, P, kW> io{
          a, static_cast<const T*>(a.dy) + r * a.dy_stride,
          static_cast<const T*>(a.x) + r * a.x_stride,
          a.dresidual ? static_cast<const T*>(a.dresidual) + r * a.dresidual_stride : nullptr,
          static_cast<T*>(a.dx) + r * a.dx_stride};
      float xv[kW], g[kW], w[kW];
      float s = 0.f;
      for (int c = first; c < end; c += step) {
        load_floats<T, kW>(io.x + c, xv);
#pragma unroll
        for (int k = 0; k < kW; ++k) s += kLayer ? xv[k] : xv[k] * xv[k];
      }
      s = row_sum(s, scratch[0] + scratch_offset) * inv_cols;
      float mean = 0.f, var = s;
      if constexpr (kLayer) {
        mean = s;
        float ss = 0.f;
        for (int c = first; c < end; c += step) {
          load_floats<T, kW>(io.x + c, xv);
#pragma unroll
          for (int k = 0; k < kW; ++k) ss += (xv[k] - mean) * (xv[k] - mean);
        }
        var = row_sum(ss, scratch[0] + scratch_offset) * inv_cols;
      }
      const float rstd = rsqrtf(var + a.eps);
      float sums[2] = {0.f, 0.f};
      for (int c = first; c < end; c += step) {
        load_floats<T, kW>(io.x + c, xv);
        load_floats<T, kW>(io.dy + c, g);
        io.weight(c, w);
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          const float xhat = (xv[k] - mean) * rstd;
          sums[0] += w[k] * g[k];
          sums[1] += xhat * w[k] * g[k];
          if (want_dw) dw_row[c + k] += g[k] * xhat;
          if (want_db) db_row[c + k] += g[k];
        }
      }
      row_sum(sums, scratch[0] + scratch_offset);
      const float mean_wdy = kLayer ? sums[0] * inv_cols : 0.f;
      for (int c = first; c < end; c += step) {
        load_floats<T, kW>(io.x + c, xv);
        load_floats<T, kW>(io.dy + c, g);
        float dr[kW];
        io.load_dresidual(c, dr);
        io.store_dx(c, xv, g, dr, mean, rstd, mean_wdy, sums[1] * inv_cols);
      }
    }
  }
}

// out[c] = sum over slots of partial[slot, c], in a fixed order: 32 strided chains per column,
// then the 32 chain sums in index order. blockIdx.y picks dweight (0) or dbias (1).
template <typename P>
__global__ void fold_partials_kernel(const float* dw_partial, const float* db_partial,
                                     int64_t slots, int cols, P* dweight, P* dbias) {
  __shared__ float chains[32][33];
  const float* partial = blockIdx.y == 0 ? dw_partial : db_partial;
  P* out = blockIdx.y == 0 ? dweight : dbias;
  if (partial == nullptr) return;  // uniform over the block
  const int c = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < cols) {
    for (int64_t k = threadIdx.y; k < slots; k += 32) acc += partial[k * cols + c];
  }
  chains[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float total = 0.f;
    for (int j = 0; j < 32; ++j) total += chains[j][threadIdx.x];
    out[c] = from_float<P>(total);
  }
}

}  // namespace

size_t norm_backward_workspace_size(int64_t rows, int64_t cols, Device device) {
  const int64_t slots = norm_backward_max_slots(rows, cols, sm_count(device));
  return static_cast<size_t>(2 * slots * cols) * sizeof(float);
}

std::string norm_backward(const NormBackwardProblem& p, const Workspace& workspace, Stream stream) {
  if (p.rows == 0 && p.dweight == nullptr && p.dbias == nullptr) return "empty";
  check_norm_cols(p);
  const int elem = static_cast<int>(dtype_size(p.x.dtype));
  const bool aligned = norm_vector_aligned(p, {&p.dy, &p.x, &p.dresidual, &p.dx}, {p.weight});
  const int sms = sm_count(p.device);
  // Accesses a thread: 2 for both kinds (bench/lab/norm_backward_lab.cu: two accesses, 512-thread
  // blocks and register prefetch were the fastest shape at N = 2048-8192 for RMSNorm and
  // LayerNorm alike). KILN_DEV_NORM_BWD_VECS overrides it in the lab.
  static const int knob = [] {
    const char* v = std::getenv("KILN_DEV_NORM_BWD_VECS");
    return v ? std::clamp(std::atoi(v), 1, kNormBackwardMaxVecs) : 0;
  }();
  const int target_vecs = knob ? knob : 2;
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.x.dtype, p.op, [&](auto xt) {
    using T = typename CudaType<decltype(xt)::value>::type;
    dispatch_bool(p.param_dtype == DType::f32, [&](auto pf) {
      using P = std::conditional_t<decltype(pf)::value, float, T>;
      dispatch_bool(p.kind == NormKind::layer, [&](auto layer) {
        dispatch_bool(aligned, [&](auto vec) {
          constexpr int kW = decltype(vec)::value ? 16 / sizeof(T) : 1;
          const NormConfig probe =
              norm_backward_config(p.rows, p.cols, elem, aligned, sms, 1, target_vecs);
          dispatch_value<1, 2, 0>(
              probe.vecs_per_thread, "norm_backward vecs_per_thread", [&](auto vpt) {
                constexpr int kVpt = decltype(vpt)::value;
                auto kernel = norm_backward_kernel<T, P, decltype(layer)::value, kW, kVpt>;
                // The register path folds its rows in shared memory (dweight, then dbias).
                const bool folds = kVpt > 0 && probe.rows_per_block > 1;
                const size_t smem = folds ? size_t{2} * p.cols * sizeof(float) : 0;
                const int blocks_per_sm = resident_blocks_per_sm(kernel, probe.threads(), smem);
                const NormConfig cfg = norm_backward_config(p.rows, p.cols, elem, aligned, sms,
                                                            blocks_per_sm, target_vecs);
                // A partial a block on the register path, a partial a row slot when streaming.
                const int64_t slots = kVpt > 0 ? cfg.grid : cfg.grid * cfg.rows_per_block;
                float* dw_partial = p.dweight ? static_cast<float*>(workspace.data) : nullptr;
                float* db_partial =
                    p.dbias ? static_cast<float*>(workspace.data) + slots * p.cols : nullptr;
                const NormBackwardArgs args{p.dy.data,
                                            p.x.data,
                                            p.weight,
                                            p.dresidual.data,
                                            p.dx.data,
                                            dw_partial,
                                            db_partial,
                                            p.rows,
                                            static_cast<int>(p.cols),
                                            p.dy.row_stride,
                                            p.x.row_stride,
                                            p.dresidual.row_stride,
                                            p.dx.row_stride,
                                            static_cast<float>(p.eps),
                                            1.f / static_cast<float>(p.cols)};
                const dim3 block(cfg.threads_per_row, cfg.rows_per_block);
                kernel<<<static_cast<unsigned>(cfg.grid), block, smem, stream>>>(args);
                KILN_CUDA_CHECK(cudaGetLastError());
                if (p.dweight || p.dbias) {
                  const dim3 fold_grid(static_cast<unsigned>(ceil_div(p.cols, 32)), 2);
                  fold_partials_kernel<P><<<fold_grid, dim3(32, 32), 0, stream>>>(
                      dw_partial, db_partial, slots, static_cast<int>(p.cols),
                      static_cast<P*>(p.dweight), static_cast<P*>(p.dbias));
                  KILN_CUDA_CHECK(cudaGetLastError());
                }
                variant =
                    norm_variant_name("norm_backward", p, kW, kVpt, cfg) + "> + fold_partials";
              });
        });
      });
    });
  });
  if (!aligned) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
