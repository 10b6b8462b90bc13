// RMSNorm / LayerNorm backward: dx per row, dweight/dbias as a deterministic column sum.
// Bytes: x, dy (+ dresidual) read once, dx written once; plus slots x cols fp32 partials written
// and folded (slots ~ SMs x occupancy x rows per block, a few % at M = 16k).
// The row statistics are recomputed from x (no saved rstd/mean needed).
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/elements.cuh"
#include "cuda/norm/norm_args.h"
#include "cuda/norm/norm_config.h"
#include "cuda/norm/norm_launch.h"
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

  // dx = rstd * (w*dy - mean_wdy - xhat * mean_xhat_wdy) + dresidual.
  __device__ __forceinline__ void store_dx(int c, const float (&xv)[kW], const float (&g)[kW],
                                           const float (&w)[kW], const float (&dr)[kW],
                                           float mean, float rstd, float mean_wdy,
                                           float mean_xhat_wdy) const {
    float out[kW];
#pragma unroll
    for (int k = 0; k < kW; ++k) {
      const float xhat = (xv[k] - mean) * rstd;
      out[k] = rstd * (w[k] * g[k] - mean_wdy - xhat * mean_xhat_wdy) + dr[k];
    }
    store_floats<T, kW>(dx + c, out);
  }

  __device__ __forceinline__ void load_dresidual(int c, float (&dr)[kW]) const {
    if (dresidual) {
      load_floats<T, kW>(dresidual + c, dr);
    } else {
#pragma unroll
      for (int k = 0; k < kW; ++k) dr[k] = 0.f;
    }
  }
};

// Elements [c, c + kW) of a row's x, dy and dresidual, as loaded (raw, in T).
template <typename T, int kW>
struct RawGrad {
  Pack<T, kW> x, dy, dres;
};

template <typename T, typename P, bool kLayer, int kW, int kVpt>
__global__ void __launch_bounds__(kNormBackwardThreads) norm_backward_kernel(const __grid_constant__ NormBackwardArgs a) {
  __shared__ float scratch[2 * kNormBackwardThreads / 32];
  const int tpr = blockDim.x;
  float* row_scratch = scratch + threadIdx.y * (tpr / 32) * 2;
  const int64_t slot = int64_t{blockIdx.x} * blockDim.y + threadIdx.y;
  const float inv_cols = 1.f / static_cast<float>(a.cols);
  const bool want_dw = a.dweight_partial != nullptr, want_db = a.dbias_partial != nullptr;
  float* dw_row = want_dw ? a.dweight_partial + slot * a.cols : nullptr;
  float* db_row = want_db ? a.dbias_partial + slot * a.cols : nullptr;
  const int64_t row_step = int64_t{gridDim.x} * blockDim.y;

  auto row_io = [&](int64_t row) {
    return BackwardRow<T, P, kW>{
        a, static_cast<const T*>(a.dy) + row * a.dy_stride,
        static_cast<const T*>(a.x) + row * a.x_stride,
        a.dresidual ? static_cast<const T*>(a.dresidual) + row * a.dresidual_stride : nullptr,
        static_cast<T*>(a.dx) + row * a.dx_stride};
  };

  if constexpr (kVpt > 0) {
    // The dweight/dbias accumulators live in shared memory (each thread touches only its own
    // columns, so no barrier is needed): in registers they pushed the 512-thread block past
    // 128 registers a thread and spilled.
    extern __shared__ float accumulators[];  // [rows_per_block][kLayer ? 2 : 1][cols]
    float* dw_acc = accumulators + threadIdx.y * (kLayer ? 2 : 1) * a.cols;
    float* db_acc = dw_acc + a.cols;
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      const int c = (i * tpr + threadIdx.x) * kW;
      if (c >= a.cols) continue;
#pragma unroll
      for (int k = 0; k < kW; ++k) {
        dw_acc[c + k] = 0.f;
        if constexpr (kLayer) db_acc[c + k] = 0.f;
      }
    }
    // x, dy (and dresidual) stay packed in their dtype, and the next row's loads are issued
    // before this row's reductions, so loads stay in flight while the block waits at barriers.
    RawGrad<T, kW> next[kVpt];
    auto load_raw = [&](int64_t row) {
      if (row >= a.rows) return;
      const BackwardRow<T, P, kW> io = row_io(row);
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        const int c = (i * tpr + threadIdx.x) * kW;
        if (c < a.cols) {
          next[i].x = *reinterpret_cast<const Pack<T, kW>*>(io.x + c);
          next[i].dy = *reinterpret_cast<const Pack<T, kW>*>(io.dy + c);
          if (io.dresidual) next[i].dres = *reinterpret_cast<const Pack<T, kW>*>(io.dresidual + c);
        }
      }
    };
    const int64_t first = int64_t{blockIdx.x} * blockDim.y;
    load_raw(first + threadIdx.y);
    // A thread owns the same columns on every row: its weights are loaded once.
    float w[kVpt][kW];
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      const int c = (i * tpr + threadIdx.x) * kW;
      if (c < a.cols) {
        row_io(0).weight(c, w[i]);
      } else {
#pragma unroll
        for (int k = 0; k < kW; ++k) w[i][k] = 0.f;
      }
    }
    for (int64_t base = first; base < a.rows; base += row_step) {
      const int64_t row = base + threadIdx.y;
      const bool active = row < a.rows;
      const BackwardRow<T, P, kW> io = row_io(active ? row : 0);
      RawGrad<T, kW> cur[kVpt];
      bool valid[kVpt];
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        cur[i] = next[i];
        valid[i] = active && (i * tpr + threadIdx.x) * kW < a.cols;
        if (!valid[i]) {
#pragma unroll
          for (int k = 0; k < kW; ++k) cur[i].x.v[k] = cur[i].dy.v[k] = from_float<T>(0.f);
        }
      }
      load_raw(row + row_step);
      float mean = 0.f;
      if constexpr (kLayer) {
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < kVpt; ++i)
#pragma unroll
          for (int k = 0; k < kW; ++k) s += to_float(cur[i].x.v[k]);
        mean = row_sum(s, row_scratch) * inv_cols;
      }
      float ss = 0.f;
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        if (!valid[i]) continue;
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          const float d = to_float(cur[i].x.v[k]) - mean;
          ss += d * d;
        }
      }
      const float rstd = rsqrtf(row_sum(ss, row_scratch) * inv_cols + a.eps);
      float sums[2] = {0.f, 0.f};  // sum(w*dy), sum(xhat * w*dy)
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        if (!valid[i]) continue;
        const int c = (i * tpr + threadIdx.x) * kW;
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          const float xhat = (to_float(cur[i].x.v[k]) - mean) * rstd;
          const float g = to_float(cur[i].dy.v[k]);
          sums[0] += w[i][k] * g;
          sums[1] += xhat * w[i][k] * g;
          dw_acc[c + k] += g * xhat;
          if constexpr (kLayer) db_acc[c + k] += g;
        }
      }
      row_sum(sums, row_scratch);
      const float mean_wdy = kLayer ? sums[0] * inv_cols : 0.f;
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        if (!valid[i]) continue;
        float xv[kW], g[kW], dr[kW];
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          xv[k] = to_float(cur[i].x.v[k]);
          g[k] = to_float(cur[i].dy.v[k]);
          dr[k] = io.dresidual ? to_float(cur[i].dres.v[k]) : 0.f;
        }
        io.store_dx((i * tpr + threadIdx.x) * kW, xv, g, w[i], dr, mean, rstd, mean_wdy,
                    sums[1] * inv_cols);
      }
    }
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      const int c = (i * tpr + threadIdx.x) * kW;
      if (c >= a.cols) continue;
#pragma unroll
      for (int k = 0; k < kW; ++k) {
        if (want_dw) dw_row[c + k] = dw_acc[c + k];
        if (kLayer && want_db) db_row[c + k] = db_acc[c + k];
      }
    }
  } else {
    // Streaming: the row is re-read (from L2) for each pass, and the dweight/dbias partials
    // live in the slot's workspace row, read-modified-written by the thread that owns the column.
    const int step = tpr * kW;
    const int first = threadIdx.x * kW;
    for (int c = first; c < a.cols; c += step) {
#pragma unroll
      for (int k = 0; k < kW; ++k) {
        if (want_dw) dw_row[c + k] = 0.f;
        if (want_db) db_row[c + k] = 0.f;
      }
    }
    for (int64_t base = int64_t{blockIdx.x} * blockDim.y; base < a.rows; base += row_step) {
      const int64_t row = base + threadIdx.y;
      const bool active = row < a.rows;
      const int64_t r = active ? row : 0;
      const int end = active ? a.cols : 0;
      const BackwardRow<T, P, kW> io = row_io(r);
      float xv[kW], g[kW], w[kW];
      float s = 0.f;
      for (int c = first; c < end; c += step) {
        load_floats<T, kW>(io.x + c, xv);
#pragma unroll
        for (int k = 0; k < kW; ++k) s += kLayer ? xv[k] : xv[k] * xv[k];
      }
      s = row_sum(s, row_scratch) * inv_cols;
      float mean = 0.f, var = s;
      if constexpr (kLayer) {
        mean = s;
        float ss = 0.f;
        for (int c = first; c < end; c += step) {
          load_floats<T, kW>(io.x + c, xv);
#pragma unroll
          for (int k = 0; k < kW; ++k) ss += (xv[k] - mean) * (xv[k] - mean);
        }
        var = row_sum(ss, row_scratch) * inv_cols;
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
      row_sum(sums, row_scratch);
      const float mean_wdy = kLayer ? sums[0] * inv_cols : 0.f;
      for (int c = first; c < end; c += step) {
        load_floats<T, kW>(io.x + c, xv);
        load_floats<T, kW>(io.dy + c, g);
        float dr[kW];
        io.load_dresidual(c, dr);
        io.weight(c, w);
        io.store_dx(c, xv, g, w, dr, mean, rstd, mean_wdy, sums[1] * inv_cols);
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

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

size_t norm_backward_workspace_size(int64_t rows, int64_t cols, Device device) {
  const int64_t slots = norm_backward_max_slots(rows, cols, sm_count(device));
  return static_cast<size_t>(2 * slots * cols) * sizeof(float);
}

std::string norm_backward(const NormBackwardProblem& p, const Workspace& workspace,
                          Stream stream) {
  if (p.rows == 0 && p.dweight == nullptr && p.dbias == nullptr) return "empty";
  if (p.cols > (int64_t{1} << 30)) {
    throw_arg_error(p.op, "x", "last dim N <= 2^30 on CUDA", std::to_string(p.cols));
  }
  const int elem = static_cast<int>(dtype_size(p.x.dtype));
  const int w = 16 / elem;
  bool aligned = p.cols % w == 0 && (p.weight == nullptr || aligned16(p.weight));
  for (const check::RowMatrix* m : {&p.dy, &p.x, &p.dresidual, &p.dx}) {
    if (m->data) aligned = aligned && aligned16(m->data) && m->row_stride % w == 0;
  }
  const int sms = sm_count(p.device);
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.x.dtype, p.op, [&](auto xt) {
    using T = typename CudaType<decltype(xt)::value>::type;
    dispatch_bool(p.param_dtype == DType::f32, [&](auto pf) {
      using P = std::conditional_t<decltype(pf)::value, float, T>;
      dispatch_bool(p.kind == NormKind::layer, [&](auto layer) {
        dispatch_bool(aligned, [&](auto vec) {
          constexpr int kW = decltype(vec)::value ? 16 / sizeof(T) : 1;
          const NormConfig probe = norm_backward_config(p.rows, p.cols, elem, aligned, sms, 1);
          dispatch_value<1, 2, 0>(probe.vecs_per_thread, "norm_backward vecs_per_thread",
                                        [&](auto vpt) {
            constexpr int kVpt = decltype(vpt)::value;
            auto kernel = norm_backward_kernel<T, P, decltype(layer)::value, kW, kVpt>;
            const size_t smem = kVpt > 0 ? size_t{probe.rows_per_block} *
                                               (decltype(layer)::value ? 2 : 1) * p.cols *
                                               sizeof(float)
                                         : 0;
            if (smem > 48 * 1024) {
              KILN_CUDA_CHECK(cudaFuncSetAttribute(
                  kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
            }
            int blocks_per_sm = 0;
            KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &blocks_per_sm, kernel, probe.threads(), smem));
            const NormConfig cfg =
                norm_backward_config(p.rows, p.cols, elem, aligned, sms, blocks_per_sm);
            const int64_t slots = cfg.grid * cfg.rows_per_block;
            float* dw_partial = p.dweight ? static_cast<float*>(workspace.data) : nullptr;
            float* db_partial =
                p.dbias ? static_cast<float*>(workspace.data) + slots * p.cols : nullptr;
            const NormBackwardArgs args{p.dy.data,      p.x.data,
                                        p.weight,       p.dresidual.data,
                                        p.dx.data,      dw_partial,
                                        db_partial,     p.rows,
                                        static_cast<int>(p.cols), p.dy.row_stride,
                                        p.x.row_stride, p.dresidual.row_stride,
                                        p.dx.row_stride, static_cast<float>(p.eps)};
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
            variant = std::string("norm_backward<") + (decltype(layer)::value ? "layer" : "rms") +
                      "," + std::string(dtype_name(p.x.dtype)) + ",param:" +
                      std::string(dtype_name(p.param_dtype)) + ",vec" + std::to_string(kW) +
                      (kVpt ? "x" + std::to_string(kVpt) : std::string("xstream")) + ",tpr" +
                      std::to_string(cfg.threads_per_row) + ",rpb" +
                      std::to_string(cfg.rows_per_block) + ",grid" + std::to_string(cfg.grid) +
                      "> + fold_partials";
          });
        });
      });
    });
  });
  if (!aligned) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
