// RMSNorm / LayerNorm backward: dx per row, dweight/dbias as a deterministic column sum.
// Bytes: x, dy (+ dresidual) read once, dx written once; plus slots x cols fp32 partials written
// and folded: the vector path folds a block's rows in shared memory first (slots = blocks), the
// streaming path keeps one partial a row slot (slots = blocks x rows per block).
// The row statistics are recomputed from x (no saved rstd/mean needed).
#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/device_info.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/fold_columns.cuh"
#include "cuda/common/pdl.h"
#include "cuda/norm/norm_args.h"
#include "cuda/norm/norm_config.h"
#include "cuda/norm/norm_launch.h"
#include "cuda/norm/norm_launch_common.h"
#include "cuda/norm/row_reduce.cuh"
#include "cuda/norm/row_stage.cuh"

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
                                           const float (&w)[kW], const float (&dr)[kW], float mean,
                                           float rstd, float mean_wdy, float mean_xhat_wdy) const {
    float out[kW];
#pragma unroll
    for (int k = 0; k < kW; ++k) {
      const float xhat = (xv[k] - mean) * rstd;
      out[k] = rstd * (w[k] * g[k] - mean_wdy - xhat * mean_xhat_wdy) + dr[k];
    }
    store_floats<T, kW>(dx + c, out);
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
  allow_dependents();  // the fold's blocks may take SM slots as this grid's blocks leave

  if constexpr (kVpt > 0) {
    float dw[kVpt][kW] = {}, db[kVpt][kW] = {};
    // Vector path: the next rows' x, dy (and dresidual) are copied to shared memory with
    // cp.async while this row is reduced and written, so the block (one per SM: x, dy and the
    // accumulators need ~120 registers a thread) keeps DRAM busy through its barriers.
    constexpr bool kStaged = kW * sizeof(T) == 16;
    extern __shared__ uint4 stage_memory[];
    const RowStage<kNormStages, kVpt> stage{stage_memory, a.dresidual ? 3 : 2};
    auto fetch = [&](int64_t row, int s) {
      if constexpr (kStaged) {
        const bool ok = row < a.rows;
        const int64_t r = ok ? row : 0;
        stage.template fetch<kW>(
            s, ok, a.cols, static_cast<const T*>(a.x) + r * a.x_stride,
            static_cast<const T*>(a.dy) + r * a.dy_stride,
            a.dresidual ? static_cast<const T*>(a.dresidual) + r * a.dresidual_stride : nullptr);
      }
    };
    // LayerNorm's shift (the row's first x) is loaded a row ahead too: as a plain load at use
    // time its latency sat exposed in front of every row's reduction.
    auto shift_of = [&](int64_t row) {
      return kLayer && row < a.rows ? static_cast<const T*>(a.x)[row * a.x_stride]
                                    : from_float<T>(0.f);
    };
    T next_shift = shift_of(first_base + threadIdx.y);
#pragma unroll
    for (int s = 0; s + 1 < kNormStages; ++s) fetch(first_base + threadIdx.y + s * row_step, s);
    int buf = 0;
    for (int64_t base = first_base; base < a.rows; base += row_step) {
      const int64_t row = base + threadIdx.y;
      const bool active = row < a.rows;
      const int64_t r = active ? row : 0;
      const BackwardRow<T, P, kW> io{
          a, static_cast<const T*>(a.dy) + r * a.dy_stride,
          static_cast<const T*>(a.x) + r * a.x_stride,
          a.dresidual ? static_cast<const T*>(a.dresidual) + r * a.dresidual_stride : nullptr,
          static_cast<T*>(a.dx) + r * a.dx_stride};
      Pack<T, kW> xp[kVpt], gp[kVpt], rp[kVpt];
      bool valid[kVpt];
      if constexpr (kStaged) stage.wait_oldest();
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        const int c = (i * tpr + threadIdx.x) * kW;
        valid[i] = active && c < a.cols;
        if (valid[i]) {
          if constexpr (kStaged) {
            using Vec = Pack<T, kW>;
            xp[i] = stage.template read<Vec>(buf, 0, i);
            gp[i] = stage.template read<Vec>(buf, 1, i);
            if (io.dresidual) rp[i] = stage.template read<Vec>(buf, 2, i);
          } else {
            xp[i] = *reinterpret_cast<const Pack<T, kW>*>(io.x + c);
            gp[i] = *reinterpret_cast<const Pack<T, kW>*>(io.dy + c);
            if (io.dresidual) rp[i] = *reinterpret_cast<const Pack<T, kW>*>(io.dresidual + c);
          }
        } else {
#pragma unroll
          for (int k = 0; k < kW; ++k) xp[i].v[k] = gp[i].v[k] = from_float<T>(0.f);
        }
      }
      const float shift = to_float(next_shift);
      next_shift = shift_of(row + row_step);
      fetch(row + (kNormStages - 1) * row_step, buf == 0 ? kNormStages - 1 : buf - 1);
      buf = buf + 1 == kNormStages ? 0 : buf + 1;
      // One reduction per row. With d = x - shift (shift = x[0] for LayerNorm, 0 for RMSNorm)
      // and wdy = w * dy: sums = {sum d, sum d^2, sum wdy, sum d * wdy}, from which
      //   mean = shift + E[d], var = E[d^2] - E[d]^2, sum(xhat * wdy) = rstd (sum d*wdy - E[d] sum
      //   wdy).
      // x, dy and the weight are widened once a row and held as floats through both passes, as the
      // norm lab's fastest shape does (s10: the old kernel converted them again in each pass).
      float xf[kVpt][kW], gf[kVpt][kW], wf[kVpt][kW];
      float sums[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        widen(xp[i], xf[i]);
        widen(gp[i], gf[i]);
        if (!valid[i]) continue;
        io.weight((i * tpr + threadIdx.x) * kW, wf[i]);
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          const float d = xf[i][k] - shift;
          const float wdy = wf[i][k] * gf[i][k];
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
#pragma unroll
        for (int k = 0; k < kW; ++k) {
          const float g = gf[i][k];
          dw[i][k] += g * (xf[i][k] - mean) * rstd;
          if constexpr (kLayer) db[i][k] += g;
        }
        float dr[kW];
        if (io.dresidual) {
          widen(rp[i], dr);
        } else {
#pragma unroll
          for (int k = 0; k < kW; ++k) dr[k] = 0.f;
        }
        io.store_dx((i * tpr + threadIdx.x) * kW, xf[i], gf[i], wf[i], dr, mean, rstd, mean_wdy,
                    mean_xhat_wdy);
      }
    }
    // The block's rows fold into one partial: row y adds into row y - 1, down to row 0, through
    // a row-sized buffer in the (now idle) stage memory, so the fold kernel reads blocks x cols
    // partials, not blocks x rows x cols. In the norm lab (H100, bf16, 16384 x 2048, four rows a
    // block) this took RMSNorm's backward from 0.0900 to 0.0821 ms and LayerNorm's from 0.0929 to
    // 0.0831; in kiln (H100, s10) rms 0.0911 -> 0.0858 and ln 0.1075 -> 0.0929 at N = 2048. The
    // order is fixed, so the bits are the same every run.
    // f(i, k, column) over this thread's valid columns of its accumulators.
    auto each_column = [&](auto&& f) {
#pragma unroll
      for (int i = 0; i < kVpt; ++i) {
        const int c = (i * tpr + threadIdx.x) * kW;
        if (c >= a.cols) continue;
#pragma unroll
        for (int k = 0; k < kW; ++k) f(i, k, c + k);
      }
    };
    if (blockDim.y > 1) {
      cp_async_wait<0>();  // the ring's last groups (empty fetches past the end) are done
      float* fold = reinterpret_cast<float*>(stage_memory);
      for (int r = static_cast<int>(blockDim.y) - 1; r > 0; --r) {
        __syncthreads();  // the stage reads (first round) or the previous round's adds are done
        if (static_cast<int>(threadIdx.y) == r) {
          each_column([&](int i, int k, int c) {
            fold[c] = dw[i][k];
            if constexpr (kLayer) fold[a.cols + c] = db[i][k];
          });
        }
        __syncthreads();
        if (static_cast<int>(threadIdx.y) == r - 1) {
          each_column([&](int i, int k, int c) {
            dw[i][k] += fold[c];
            if constexpr (kLayer) db[i][k] += fold[a.cols + c];
          });
        }
      }
      if (threadIdx.y != 0) return;
    }
    float* dw_row = want_dw ? a.dweight_partial + int64_t{blockIdx.x} * a.cols : nullptr;
    float* db_row = want_db ? a.dbias_partial + int64_t{blockIdx.x} * a.cols : nullptr;
    each_column([&](int i, int k, int c) {
      if (want_dw) dw_row[c] = dw[i][k];
      if (kLayer && want_db) db_row[c] = db[i][k];
    });
  } else {
    const int64_t slot = int64_t{blockIdx.x} * blockDim.y + threadIdx.y;
    float* dw_row = want_dw ? a.dweight_partial + slot * a.cols : nullptr;
    float* db_row = want_db ? a.dbias_partial + slot * a.cols : nullptr;
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
        io.weight(c, w);
        io.store_dx(c, xv, g, w, dr, mean, rstd, mean_wdy, sums[1] * inv_cols);
      }
    }
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
  // Accesses a thread aims for: RMSNorm 1 (64 registers: two blocks a SM), LayerNorm 2 (at 1 it
  // fits 64 registers too, but measured slower: 0.0981 against 0.0905 ms at 16384 x 2048, H100,
  // s12). KILN_DEV_NORM_BWD_VECS overrides it in the lab.
  static const int knob = [] {
    const char* v = std::getenv("KILN_DEV_NORM_BWD_VECS");
    return v ? std::clamp(std::atoi(v), 1, kNormBackwardMaxVecs) : 0;
  }();
  const int target_vecs = knob ? knob : p.kind == NormKind::layer ? 2 : 1;
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
                const int tensors = p.dresidual.data ? 3 : 2;
                const size_t stage_bytes =
                    kVpt > 0 && kW * sizeof(T) == 16
                        ? RowStage<kNormStages, kVpt>::bytes(probe.threads(), tensors)
                        : 0;
                // The vector path folds its rows through a buffer of one row of dweight (and
                // dbias) partials: inside the stage memory when there is one.
                const size_t fold_bytes =
                    kVpt > 0 && probe.rows_per_block > 1
                        ? static_cast<size_t>((decltype(layer)::value ? 2 : 1) * p.cols) *
                              sizeof(float)
                        : 0;
                const size_t smem = std::max(stage_bytes, fold_bytes);
                const int blocks_per_sm = resident_blocks_per_sm(kernel, probe.threads(), smem);
                const NormConfig cfg = norm_backward_config(p.rows, p.cols, elem, aligned, sms,
                                                            blocks_per_sm, target_vecs);
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
                  FoldColumns<P> fold;
                  fold.partials[0] = p.dweight ? dw_partial : db_partial;
                  fold.out[0] = static_cast<P*>(p.dweight ? p.dweight : p.dbias);
                  if (p.dweight && p.dbias) {
                    fold.partials[1] = db_partial;
                    fold.out[1] = static_cast<P*>(p.dbias);
                  }
                  fold.slots = slots;
                  fold.cols = static_cast<int>(p.cols);
                  launch_fold_columns(fold, static_cast<cudaStream_t>(stream));
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
