// RMSNorm / LayerNorm forward, with the optional fused residual add.
// Bytes: x (+ residual) read once, y (+ residual_out) written once; weight/bias stay in L2.
// A row is held in registers (vecs_per_thread > 0) or, for very wide rows, streamed and re-read
// from L2 per pass (vecs_per_thread = 0). See norm_config.h for the launch shapes.
#include <cstdlib>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/norm/norm_args.h"
#include "cuda/norm/norm_config.h"
#include "cuda/norm/norm_launch.h"
#include "cuda/norm/norm_launch_common.h"
#include "cuda/norm/row_reduce.cuh"

namespace kiln::cuda {
namespace {

template <typename T, typename P, int kW>
struct ForwardRow {
  const NormForwardArgs& a;
  const T* x;
  const T* residual;
  T* y;
  T* residual_out;

  // Loads elements [c, c + kW) of the row: x, or x + residual rounded to T (written to
  // residual_out on the first pass; later passes re-read residual_out).
  __device__ __forceinline__ void load(int c, float (&v)[kW], bool first_pass) const {
    if (residual == nullptr) {
      load_floats<T, kW>(x + c, v);
    } else if (!first_pass) {
      load_floats<T, kW>(residual_out + c, v);
    } else {
      float r[kW];
      load_floats<T, kW>(x + c, v);
      load_floats<T, kW>(residual + c, r);
      Pack<T, kW> sum;
#pragma unroll
      for (int k = 0; k < kW; ++k) {
        sum.v[k] = from_float<T>(v[k] + r[k]);
        v[k] = to_float(sum.v[k]);
      }
      *reinterpret_cast<Pack<T, kW>*>(residual_out + c) = sum;
    }
  }

  __device__ __forceinline__ void store(int c, const float (&v)[kW], float mean, float rstd) const {
    float w[kW], b[kW], out[kW];
    if (a.weight) {
      load_floats<P, kW>(static_cast<const P*>(a.weight) + c, w);
    } else {
#pragma unroll
      for (int k = 0; k < kW; ++k) w[k] = 1.f;
    }
    if (a.bias) {
      load_floats<P, kW>(static_cast<const P*>(a.bias) + c, b);
    } else {
#pragma unroll
      for (int k = 0; k < kW; ++k) b[k] = 0.f;
    }
#pragma unroll
    for (int k = 0; k < kW; ++k) out[k] = (v[k] - mean) * rstd * w[k] + b[k];
    store_floats<T, kW>(y + c, out);
  }
};

template <typename T, typename P, bool kLayer, int kW, int kVpt>
__global__ void __launch_bounds__(kNormForwardThreads)
    norm_forward_kernel(const __grid_constant__ NormForwardArgs a) {
  __shared__ float scratch[2 * kNormForwardThreads / 32];
  const int tpr = blockDim.x;
  float* row_scratch = scratch + threadIdx.y * (tpr / 32) * 2;
  const int64_t row = int64_t{blockIdx.x} * blockDim.y + threadIdx.y;
  const bool active = row < a.rows;
  const int64_t r = active ? row : 0;
  const ForwardRow<T, P, kW> io{
      a, static_cast<const T*>(a.x) + r * a.x_stride,
      a.residual ? static_cast<const T*>(a.residual) + r * a.residual_stride : nullptr,
      static_cast<T*>(a.y) + r * a.y_stride,
      a.residual ? static_cast<T*>(a.residual_out) + r * a.residual_out_stride : nullptr};
  const float inv_cols = 1.f / static_cast<float>(a.cols);

  if constexpr (kVpt > 0) {
    float v[kVpt][kW];
    bool valid[kVpt];
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      const int c = (i * tpr + threadIdx.x) * kW;
      valid[i] = active && c < a.cols;
      if (valid[i]) {
        io.load(c, v[i], true);
      } else {
#pragma unroll
        for (int k = 0; k < kW; ++k) v[i][k] = 0.f;
      }
    }
    // One reduction per row: sum(x^2) for RMSNorm; for LayerNorm sum(d) and sum(d^2) with
    // d = x - x[0], the row's first element as a shift, so E[d^2] - E[d]^2 does not cancel the
    // way E[x^2] - E[x]^2 would for rows with a large mean.
    const float shift = kLayer && active ? to_float(io.x[0]) : 0.f;
    float part[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      if (!valid[i]) continue;
#pragma unroll
      for (int k = 0; k < kW; ++k) {
        const float d = v[i][k] - shift;
        part[0] += d;
        part[1] += d * d;
      }
    }
    float mean = 0.f, var;
    if constexpr (kLayer) {
      row_sum(part, row_scratch);
      const float m = part[0] * inv_cols;
      mean = shift + m;
      var = fmaxf(part[1] * inv_cols - m * m, 0.f);
    } else {
      var = row_sum(part[1], row_scratch) * inv_cols;
    }
    const float rstd = rsqrtf(var + a.eps);
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      if (valid[i]) io.store((i * tpr + threadIdx.x) * kW, v[i], mean, rstd);
    }
  } else {
    // Streaming: pass 1 sums (and writes residual_out), LayerNorm's pass 2 sums squared
    // deviations, the last pass normalises. Passes after the first read the row back from L2.
    const int step = tpr * kW;
    const int first = threadIdx.x * kW;
    const int end = active ? a.cols : 0;
    float v[kW];
    float s = 0.f;
    for (int c = first; c < end; c += step) {
      io.load(c, v, true);
#pragma unroll
      for (int k = 0; k < kW; ++k) s += kLayer ? v[k] : v[k] * v[k];
    }
    s = row_sum(s, row_scratch) * inv_cols;
    float mean = 0.f, var = s;
    if constexpr (kLayer) {
      mean = s;
      float ss = 0.f;
      for (int c = first; c < end; c += step) {
        io.load(c, v, false);
#pragma unroll
        for (int k = 0; k < kW; ++k) ss += (v[k] - mean) * (v[k] - mean);
      }
      var = row_sum(ss, row_scratch) * inv_cols;
    }
    const float rstd = rsqrtf(var + a.eps);
    for (int c = first; c < end; c += step) {
      io.load(c, v, false);
      io.store(c, v, mean, rstd);
    }
  }
}

}  // namespace

std::string norm_forward(const NormForwardProblem& p, Stream stream) {
  if (p.rows == 0) return "empty";
  check_norm_cols(p);
  const int elem = static_cast<int>(dtype_size(p.x.dtype));
  const bool aligned =
      norm_vector_aligned(p, {&p.x, &p.residual, &p.y, &p.residual_out}, {p.weight, p.bias});
  // KILN_DEV_NORM_FWD_VECS: a tuning knob for the lab (accesses a thread aims for; default 1).
  static const int target_vecs = [] {
    const char* v = std::getenv("KILN_DEV_NORM_FWD_VECS");
    return v ? std::max(1, std::atoi(v)) : 1;
  }();
  const NormConfig cfg = norm_forward_config(p.rows, p.cols, elem, aligned, target_vecs);

  const NormForwardArgs args{p.x.data,
                             p.residual.data,
                             p.weight,
                             p.bias,
                             p.y.data,
                             p.residual_out.data,
                             p.rows,
                             static_cast<int>(p.cols),
                             p.x.row_stride,
                             p.residual.row_stride,
                             p.y.row_stride,
                             p.residual_out.row_stride,
                             static_cast<float>(p.eps)};
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.x.dtype, p.op, [&](auto xt) {
    using T = typename CudaType<decltype(xt)::value>::type;
    const bool param_is_f32 = p.param_dtype == DType::f32;
    dispatch_bool(param_is_f32, [&](auto pf) {
      using P = std::conditional_t<decltype(pf)::value, float, T>;
      dispatch_bool(p.kind == NormKind::layer, [&](auto layer) {
        dispatch_bool(aligned, [&](auto vec) {
          constexpr int kW = decltype(vec)::value ? 16 / sizeof(T) : 1;
          dispatch_value<1, 2, 4, 0>(
              cfg.vecs_per_thread, "norm_forward vecs_per_thread", [&](auto vpt) {
                constexpr int kVpt = decltype(vpt)::value;
                const dim3 block(cfg.threads_per_row, cfg.rows_per_block);
                norm_forward_kernel<T, P, decltype(layer)::value, kW, kVpt>
                    <<<static_cast<unsigned>(cfg.grid), block, 0, stream>>>(args);
                KILN_CUDA_CHECK(cudaGetLastError());
                variant = norm_variant_name("norm_forward", p, kW, kVpt, cfg) + ">";
              });
        });
      });
    });
  });
  if (!aligned) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
