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
#include "kiln/core/error.h"

namespace kiln::cuda {
namespace {

// kResidual: the add_* forms (x + residual, written to residual_out). A template parameter, not a
// null check, so the plain forms carry none of its code (the plain RMSNorm kernel with the check
// ran ~5% slower than the norm lab's kernel of the same shape without it, H100, N = 8192).
template <typename T, typename P, int kW, bool kResidual>
struct ForwardRow {
  const NormForwardArgs& a;
  const T* x;
  const T* residual;
  T* y;
  T* residual_out;

  __device__ __forceinline__ ForwardRow(const NormForwardArgs& args, int64_t r)
      : a(args),
        x(static_cast<const T*>(a.x) + r * a.x_stride),
        residual(kResidual ? static_cast<const T*>(a.residual) + r * a.residual_stride : nullptr),
        y(static_cast<T*>(a.y) + r * a.y_stride),
        residual_out(kResidual ? static_cast<T*>(a.residual_out) + r * a.residual_out_stride
                               : nullptr) {}

  // x, or x + residual rounded to T (also written to residual_out). Values stay packed in T
  // (half the registers of fp32 for bf16/f16) and are widened where they are used.
  __device__ __forceinline__ Pack<T, kW> combine(int c, const Pack<T, kW>& xp,
                                                 const Pack<T, kW>& rp) const {
    float xf[kW], rf[kW];
    widen(xp, xf);
    widen(rp, rf);
#pragma unroll
    for (int k = 0; k < kW; ++k) xf[k] += rf[k];
    const Pack<T, kW> sum = narrow<T, kW>(xf);
    *reinterpret_cast<Pack<T, kW>*>(residual_out + c) = sum;
    return sum;
  }

  // Elements [c, c + kW) from global memory: on the first pass x (+ residual, writing
  // residual_out); later passes of the streaming path re-read residual_out.
  __device__ __forceinline__ Pack<T, kW> load(int c, bool first_pass) const {
    using Vec = Pack<T, kW>;
    if constexpr (kResidual) {
      if (!first_pass) return *reinterpret_cast<const Vec*>(residual_out + c);
      const Vec xp = *reinterpret_cast<const Vec*>(x + c);
      const Vec rp = *reinterpret_cast<const Vec*>(residual + c);
      return combine(c, xp, rp);
    } else {
      return *reinterpret_cast<const Vec*>(x + c);
    }
  }

  // RMSNorm (kLayer = false) has no mean and no bias: not even a "+ 0", which the compiler may
  // not drop (-0 + 0 is +0) and which costs an instruction an element in an issue-bound kernel.
  template <bool kLayer>
  __device__ __forceinline__ void store(int c, const Pack<T, kW>& v, const Pack<P, kW>& w,
                                        const Pack<P, kW>& b, float mean, float rstd) const {
    float out[kW], vf[kW], wf[kW];
    widen(v, vf);
    widen(w, wf);
    if constexpr (kLayer) {
      float bf[kW];
      widen(b, bf);
#pragma unroll
      for (int k = 0; k < kW; ++k) out[k] = (vf[k] - mean) * rstd * wf[k] + bf[k];
    } else {
#pragma unroll
      for (int k = 0; k < kW; ++k) out[k] = vf[k] * rstd * wf[k];
    }
    store_floats<T, kW>(y + c, out);
  }
};

// weight / bias elements [c, c + kW), kept packed in their own dtype (fewer registers than
// floats); 1 / 0 where absent (RMSNorm has no bias: a constant the compiler folds away).
template <typename P, int kW, bool kLayer>
__device__ __forceinline__ void load_params(const NormForwardArgs& a, int c, Pack<P, kW>& w,
                                            Pack<P, kW>& b) {
  if (a.weight) {
    w = *reinterpret_cast<const Pack<P, kW>*>(static_cast<const P*>(a.weight) + c);
  } else {
    w = splat<P, kW>(1.f);
  }
  if (kLayer && a.bias) {
    b = *reinterpret_cast<const Pack<P, kW>*>(static_cast<const P*>(a.bias) + c);
  } else {
    b = splat<P, kW>(0.f);
  }
}

// One row per thread group, one row group per block (not persistent: blocks that finish free
// their SM slot for the next rows at once).
// Blocks a SM each instance is compiled for: registers are allocated 8 a thread, so 33 registers
// cost a quarter of the rows in flight of 32. Measured on the H100 (bf16, M = 16384), capping
// 1-access rows at 32 registers (4 blocks) and 2-access rows at 40 (3 blocks) took layer_norm
// forward from 70-74% to 79-85% of copy; ptxas spills a few bytes in three instances (bf16 x
// with fp32 weight at 1 access, LayerNorm bf16 at 2 accesses), cheaper than the lost blocks.
template <int kVpt>
constexpr int forward_min_blocks() {
  return kVpt == 1 ? 4 : kVpt == 2 ? 3 : 1;
}

template <typename T, typename P, bool kLayer, bool kResidual, int kW, int kVpt>
__global__ void __launch_bounds__(kNormForwardThreads, forward_min_blocks<kVpt>())
    norm_forward_kernel(const __grid_constant__ NormForwardArgs a) {
  __shared__ __align__(16) float scratch[2 * kNormForwardThreads / 32];
  const int tpr = blockDim.x;
  float* row_scratch = scratch + threadIdx.y * (tpr / 32) * 2;
  const int64_t row = int64_t{blockIdx.x} * blockDim.y + threadIdx.y;
  const bool active = row < a.rows;
  const ForwardRow<T, P, kW, kResidual> io(a, active ? row : 0);
  const float inv_cols = a.inv_cols;

  if constexpr (kVpt > 0) {
    Pack<T, kW> v[kVpt];
    bool valid[kVpt];
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      const int c = (i * tpr + threadIdx.x) * kW;
      valid[i] = active && c < a.cols;
      if (valid[i]) {
        v[i] = io.load(c, true);
      } else {
#pragma unroll
        for (int k = 0; k < kW; ++k) v[i].v[k] = from_float<T>(0.f);
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
      float vf[kW];
      widen(v[i], vf);
#pragma unroll
      for (int k = 0; k < kW; ++k) {
        const float d = vf[k] - shift;
        part[0] += d;
        part[1] += d * d;
      }
    }
    // The scratch is used once: no trailing barrier.
    float mean = 0.f, var;
    if constexpr (kLayer) {
      row_sum<2, false>(part, row_scratch);
      const float m = part[0] * inv_cols;
      mean = shift + m;
      var = fmaxf(part[1] * inv_cols - m * m, 0.f);
    } else {
      float sq[1] = {part[1]};
      row_sum<1, false>(sq, row_scratch);
      var = sq[0] * inv_cols;
    }
    const float rstd = rsqrtf(var + a.eps);
#pragma unroll
    for (int i = 0; i < kVpt; ++i) {
      if (!valid[i]) continue;
      // Weight and bias are loaded here, after the reduction: loading them with x (measured
      // on the H100) cost more in registers and occupancy than their latency costs here.
      Pack<P, kW> w, b;
      load_params<P, kW, kLayer>(a, (i * tpr + threadIdx.x) * kW, w, b);
      io.template store<kLayer>((i * tpr + threadIdx.x) * kW, v[i], w, b, mean, rstd);
    }
  } else {
    // Streaming: pass 1 sums (and writes residual_out), LayerNorm's pass 2 sums squared
    // deviations, the last pass normalises. Passes after the first read the row back from L2.
    const int step = tpr * kW;
    const int first = threadIdx.x * kW;
    const int end = active ? a.cols : 0;
    float s = 0.f;
    for (int c = first; c < end; c += step) {
      float v[kW];
      widen(io.load(c, true), v);
#pragma unroll
      for (int k = 0; k < kW; ++k) s += kLayer ? v[k] : v[k] * v[k];
    }
    s = row_sum(s, row_scratch) * inv_cols;
    float mean = 0.f, var = s;
    if constexpr (kLayer) {
      mean = s;
      float ss = 0.f;
      for (int c = first; c < end; c += step) {
        float v[kW];
        widen(io.load(c, false), v);
#pragma unroll
        for (int k = 0; k < kW; ++k) ss += (v[k] - mean) * (v[k] - mean);
      }
      var = row_sum(ss, row_scratch) * inv_cols;
    }
    const float rstd = rsqrtf(var + a.eps);
    for (int c = first; c < end; c += step) {
      Pack<P, kW> w, b;
      load_params<P, kW, kLayer>(a, c, w, b);
      io.template store<kLayer>(c, io.load(c, false), w, b, mean, rstd);
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
  // Lab knobs for A/B runs (norm_forward_config picks the shape without them):
  // KILN_DEV_NORM_FWD_VECS, the accesses a thread aims for, and KILN_DEV_NORM_FWD_BLOCK, the
  // threads of a block's rows (a power of two, 32-512).
  static const int target_vecs = [] {
    const char* v = std::getenv("KILN_DEV_NORM_FWD_VECS");
    return v ? std::max(1, std::atoi(v)) : 0;
  }();
  static const char* block_knob = std::getenv("KILN_DEV_NORM_FWD_BLOCK");
  static const int block_threads = block_knob ? std::atoi(block_knob) : kNormForwardBlockThreads;
  if (block_threads < 32 || block_threads > kNormForwardThreads ||
      (block_threads & (block_threads - 1)) != 0) {
    throw Error(p.op + ": KILN_DEV_NORM_FWD_BLOCK must be a power of two in [32, " +
                std::to_string(kNormForwardThreads) + "], got '" + block_knob + "'");
  }
  const NormConfig cfg =
      norm_forward_config(p.rows, p.cols, elem, aligned, target_vecs, block_threads);

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
                             static_cast<float>(p.eps),
                             1.f / static_cast<float>(p.cols)};
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.x.dtype, p.op, [&](auto xt) {
    using T = typename CudaType<decltype(xt)::value>::type;
    const bool param_is_f32 = p.param_dtype == DType::f32;
    dispatch_bool(param_is_f32, [&](auto pf) {
      using P = std::conditional_t<decltype(pf)::value, float, T>;
      dispatch_bool(p.kind == NormKind::layer, [&](auto layer) {
        dispatch_bool(p.residual.data != nullptr, [&](auto residual) {
          dispatch_bool(aligned, [&](auto vec) {
            constexpr int kW = decltype(vec)::value ? 16 / sizeof(T) : 1;
            dispatch_value<1, 2, 4, 0>(
                cfg.vecs_per_thread, "norm_forward vecs_per_thread", [&](auto vpt) {
                  constexpr int kVpt = decltype(vpt)::value;
                  auto kernel = norm_forward_kernel<T, P, decltype(layer)::value,
                                                    decltype(residual)::value, kW, kVpt>;
                  const dim3 block(cfg.threads_per_row, cfg.rows_per_block);
                  kernel<<<static_cast<unsigned>(cfg.grid), block, 0, stream>>>(args);
                  KILN_CUDA_CHECK(cudaGetLastError());
                  variant = norm_variant_name("norm_forward", p, kW, kVpt, cfg) + ">";
                });
          });
        });
      });
    });
  });
  if (!aligned) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
