// moe_sum forward (weighted sum of k rows a token), backward dx (the token's dout scaled per
// expert) and dweights (k dot products a token). The k loop is unrolled to kMoeSumMaxK with a
// guard, so one instance serves every k; terms are added in order j = 0 .. k-1.
#include <algorithm>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/row_launch.h"
#include "cuda/moe_sum/moe_sum_launch.h"
#include "kiln/ops/moe_sum.h"

namespace kiln::cuda {
namespace {

struct MoeSumArgs {
  const void* x;        // [T * k, N]
  const void* weights;  // [T, k] or null
  void* out;            // forward out / backward dout [T, N]
  void* dx;             // backward [T * k, N]
  void* dweights;       // backward [T, k] or null
  int64_t tokens;
  int k, cols;
  int64_t x_stride, w_stride, out_stride, dx_stride, dw_stride;  // rows (x, dx: within a token)
  int64_t x_token_stride, dx_token_stride, w_k_stride;
};

template <typename W>
__device__ __forceinline__ float weight_of(const MoeSumArgs& a, int64_t t, int j) {
  return a.weights ? to_float(static_cast<const W*>(a.weights)[t * a.w_stride + j * a.w_k_stride])
                   : 1.f;
}

template <typename T, typename W, int kW, bool kBackward>
__global__ void __launch_bounds__(kRowBlockThreads)
    moe_sum_kernel(const __grid_constant__ MoeSumArgs a) {
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * kW;
  if (c >= a.cols) return;
  const int64_t step = int64_t{gridDim.y} * blockDim.y;
  for (int64_t t = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; t < a.tokens; t += step) {
    if constexpr (!kBackward) {
      float acc[kW] = {};
#pragma unroll
      for (int j = 0; j < kMoeSumMaxK; ++j) {
        if (j >= a.k) break;
        float v[kW];
        load_floats<T, kW>(static_cast<const T*>(a.x) + t * a.x_token_stride + j * a.x_stride + c,
                           v);
        const float w = weight_of<W>(a, t, j);
#pragma unroll
        for (int e = 0; e < kW; ++e) acc[e] += w * v[e];
      }
      store_floats<T, kW>(static_cast<T*>(a.out) + t * a.out_stride + c, acc);
    } else {
      float g[kW];
      load_floats<T, kW>(static_cast<const T*>(a.out) + t * a.out_stride + c, g);
#pragma unroll
      for (int j = 0; j < kMoeSumMaxK; ++j) {
        if (j >= a.k) break;
        const float w = weight_of<W>(a, t, j);
        float d[kW];
#pragma unroll
        for (int e = 0; e < kW; ++e) d[e] = w * g[e];
        store_floats<T, kW>(static_cast<T*>(a.dx) + t * a.dx_token_stride + j * a.dx_stride + c, d);
      }
    }
  }
}

// The backward with dweights, one pass: dx[t, j] = w[t, j] * dout[t] and dweights[t, j] =
// <dout[t, :], x[t, j, :]>, one block a token (the block sized so every thread makes the same
// number of accesses), dout read once. The dot products are reduced in a fixed order: warp
// butterflies, then the warps in order.
inline constexpr int kMoeSumLoadBatch = 4;

template <typename T, typename W, int kW>
__global__ void __launch_bounds__(kRowBlockThreads)
    moe_sum_backward_dweights_kernel(const __grid_constant__ MoeSumArgs a) {
  __shared__ float partial[kRowBlockThreads / 32][kMoeSumMaxK];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    float w[kMoeSumMaxK], dot[kMoeSumMaxK] = {};
#pragma unroll
    for (int j = 0; j < kMoeSumMaxK; ++j) w[j] = j < a.k ? weight_of<W>(a, t, j) : 0.f;
    for (int c = threadIdx.x * kW; c < a.cols; c += blockDim.x * kW) {
      float g[kW];
      load_floats<T, kW>(static_cast<const T*>(a.out) + t * a.out_stride + c, g);
      // kMoeSumLoadBatch rows loaded before their stores: a store (st.global with a memory
      // clobber, elements.cuh) keeps later loads behind it, so row by row a thread had one load
      // in flight. All k rows at once took 149 registers (one block of 224 threads a SM).
#pragma unroll
      for (int j0 = 0; j0 < kMoeSumMaxK; j0 += kMoeSumLoadBatch) {
        if (j0 >= a.k) break;
        Pack<T, kW> xs[kMoeSumLoadBatch];
#pragma unroll
        for (int j = j0; j < j0 + kMoeSumLoadBatch; ++j) {
          if (j < a.k) {
            xs[j - j0] = load_pack<T, kW>(static_cast<const T*>(a.x) + t * a.x_token_stride +
                                          j * a.x_stride + c);
          }
        }
#pragma unroll
        for (int j = j0; j < j0 + kMoeSumLoadBatch; ++j) {
          if (j >= a.k) break;
          float v[kW], d[kW];
          widen(xs[j - j0], v);
#pragma unroll
          for (int e = 0; e < kW; ++e) {
            dot[j] += g[e] * v[e];
            d[e] = w[j] * g[e];
          }
          store_floats<T, kW>(static_cast<T*>(a.dx) + t * a.dx_token_stride + j * a.dx_stride + c,
                              d);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kMoeSumMaxK; ++j) {
      if (j >= a.k) break;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) dot[j] += __shfl_xor_sync(~0u, dot[j], o);
      if (lane == 0) partial[warp][j] = dot[j];
    }
    __syncthreads();
    if (threadIdx.x < a.k) {
      float s = 0.f;
      for (int i = 0; i < warps; ++i) s += partial[i][threadIdx.x];
      static_cast<W*>(a.dweights)[t * a.dw_stride + threadIdx.x] = from_float<W>(s);
    }
    __syncthreads();
  }
}

}  // namespace

std::string moe_sum(const MoeSumProblem& p, Stream stream) {
  if (p.cols > (int64_t{1} << 30)) {
    throw_arg_error(p.op, "x", "last dim N <= 2^30 on CUDA", std::to_string(p.cols));
  }
  const int w = 16 / static_cast<int>(dtype_size(p.dtype));
  const bool vec = rows_vector_aligned(p.cols, w, {&p.x, &p.out, &p.dx}) &&
                   (p.tokens <= 1 || (p.x_token_stride % w == 0 && p.dx_token_stride % w == 0));
  const MoeSumArgs args{p.x.data,
                        p.weights.data,
                        p.out.data,
                        p.dx.data,
                        p.dweights.data,
                        p.tokens,
                        static_cast<int>(p.k),
                        static_cast<int>(p.cols),
                        p.x.row_stride,
                        p.weights.row_stride,
                        p.out.row_stride,
                        p.dx.row_stride,
                        p.dweights.row_stride,
                        p.x_token_stride,
                        p.dx_token_stride,
                        p.w_k_stride};
  const RowLaunch launch = row_launch(p.tokens, p.cols, vec ? w : 1);
  const bool dweights = p.backward && p.dweights.data != nullptr;
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.w_dtype == DType::f32, [&](auto wf) {
      using W = std::conditional_t<decltype(wf)::value, float, T>;
      dispatch_bool(p.backward, [&](auto bwd) {
        dispatch_bool(vec, [&](auto v) {
          constexpr int kW = decltype(v)::value ? 16 / sizeof(T) : 1;
          const std::string shape = std::string(dtype_name(p.dtype)) + ",k" + std::to_string(p.k) +
                                    ",vec" + std::to_string(kW);
          if (dweights) {
            const int threads = token_block_threads(p.cols, kW);
            if (p.tokens > 0) {
              const auto blocks = static_cast<unsigned>(std::min<int64_t>(p.tokens, 1 << 20));
              moe_sum_backward_dweights_kernel<T, W, kW><<<blocks, threads, 0, stream>>>(args);
              KILN_CUDA_CHECK(cudaGetLastError());
            }
            variant =
                "moe_sum_backward_dweights<" + shape + ",threads" + std::to_string(threads) + ">";
            return;
          }
          if (p.tokens > 0 && p.cols > 0) {
            moe_sum_kernel<T, W, kW, decltype(bwd)::value>
                <<<launch.grid, launch.block, 0, stream>>>(args);
            KILN_CUDA_CHECK(cudaGetLastError());
          }
          variant = std::string(p.backward ? "moe_sum_backward<" : "moe_sum<") + shape + ",tpr" +
                    std::to_string(launch.threads_per_row) + ",rpb" +
                    std::to_string(launch.rows_per_block) + ">";
        });
      });
    });
  });
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
