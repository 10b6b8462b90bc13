// mhc_post_mix forward and backward. The forward runs the row-wise launch shape (no reduction);
// the backward one block a token (sized by token_block_threads so every thread makes the same
// number of accesses), the token's coefficients staged once in shared memory, each thread walking
// its columns of all n streams at once.
//
// Napkin math (n = 4, C = 8192, bf16, T = 4096): the forward moves (2n + 1) T C = 9 x 64 MiB, the
// backward (3n + 2) T C = 14 x 64 MiB; per 8-column access a thread does ~n(n + 1) x 8 FMAs
// forward and ~2n(n + 1) x 8 backward, far below the FP32 rate at H100 bandwidth (~14 B/clk/SM),
// so both are bound by memory. n = 4 is its own instance (loops fully unrolled; the backward's H
// in smem at compile-time offsets); any n <= 8 runs on the kMhcMaxStreams instance whose unrolled
// loops stop at the run-time n.
//
// The backward's n(n + 1) dot products a token are reduced in a fixed order: each thread over its
// columns in order, warp butterflies, then the warps in order (the block size depends on C only).
#include <algorithm>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/row_launch.h"
#include "cuda/mhc/mhc_mix_launch.h"
#include "kiln/ops/mhc.h"

namespace kiln::cuda {
namespace {

struct PostMixArgs {
  const void* x;        // [T, n, C]
  void* x_out;          // forward: x' written; backward: dx' read [T, n, C]
  const void* y;        // [T, C]
  void* dx;             // backward [T, n, C]
  void* dy;             // backward [T, C]
  const float* h_res;   // [T, n, n], any strides
  const float* h_post;  // [T, n], any strides
  float* dh_res;        // backward [T * n, n] rows
  float* dh_post;       // backward [T, n] rows
  int64_t tokens;
  int n, cols;
  int64_t x_t, x_s, xo_t, xo_s, dx_t, dx_s;  // token and stream strides
  int64_t y_t, dy_t, dhr_row, dhp_t;
  int64_t hr_t, hr_j, hr_i, hp_t, hp_j;
};

// The token's coefficients in shared memory at fixed offsets: res[j][i], post[j].
template <int kMaxN>
struct TokenCoeffs {
  float res[kMaxN][kMaxN];
  float post[kMaxN];
};

// Stages token t's H_res and H_post; the caller syncs.
template <int kMaxN>
__device__ __forceinline__ void stage_coeffs(const PostMixArgs& a, int n, int64_t t,
                                             TokenCoeffs<kMaxN>& h) {
  for (int e = threadIdx.x; e < n * n + n; e += blockDim.x) {
    if (e < n * n) {
      const int j = e / n, i = e % n;
      h.res[j][i] = a.h_res[t * a.hr_t + j * a.hr_j + i * a.hr_i];
    } else {
      h.post[e - n * n] = a.h_post[t * a.hp_t + (e - n * n) * a.hp_j];
    }
  }
}

template <typename T, int kW, int kMaxN>
__device__ __forceinline__ void load_streams(const T* base, int64_t stride, int n,
                                             float (&v)[kMaxN][kW]) {
#pragma unroll
  for (int i = 0; i < kMaxN; ++i) {
    if (i >= n) break;
    load_floats<T, kW>(base + i * stride, v[i]);
  }
}

// One output row of the backward from the streams' gradients g: d = sum_j coeff[j * coeff_step] *
// g[j] (dy from H_post, or dx_i from column i of H_res), and dot[j * dot_step] += <g[j], v> (the
// gradients of those coefficients, v being y or x_i), j < n.
template <int kW, int kMaxN>
__device__ __forceinline__ void backward_row(int n, const float (&g)[kMaxN][kW],
                                             const float (&v)[kW], const float* coeff,
                                             int coeff_step, float* dot, int dot_step,
                                             float (&d)[kW]) {
#pragma unroll
  for (int e = 0; e < kW; ++e) d[e] = 0.f;
#pragma unroll
  for (int j = 0; j < kMaxN; ++j) {
    if (j >= n) break;
    const float w = coeff[j * coeff_step];
#pragma unroll
    for (int e = 0; e < kW; ++e) {
      d[e] += w * g[j][e];
      dot[j * dot_step] += g[j][e] * v[e];
    }
  }
}

// kN: 4 for the unrolled n = 4 instance, 0 for any n <= kMhcMaxStreams.
// The forward needs no per-token reduction, so it takes the row-wise launch shape (blockIdx.x
// walks C, blockIdx.y and a loop the tokens: many short blocks, like moe_sum's forward); each
// thread reads its token's coefficients from global memory (the same addresses across a warp:
// L1 broadcasts). One block a token measured 37% of copy on the H100 (4096 x 4 x 8192 bf16).
template <typename T, int kW, int kN>
__global__ void __launch_bounds__(kRowBlockThreads)
    mhc_post_mix_kernel(const __grid_constant__ PostMixArgs a) {
  constexpr int kMaxN = kN > 0 ? kN : kMhcMaxStreams;
  const int n = kN > 0 ? kN : a.n;
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * kW;
  if (c >= a.cols) return;
  const int64_t step = int64_t{gridDim.y} * blockDim.y;
  for (int64_t t = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; t < a.tokens; t += step) {
    float xv[kMaxN][kW], yv[kW];
    load_streams<T, kW, kMaxN>(static_cast<const T*>(a.x) + t * a.x_t + c, a.x_s, n, xv);
    load_floats<T, kW>(static_cast<const T*>(a.y) + t * a.y_t + c, yv);
    const float* res = a.h_res + t * a.hr_t;
#pragma unroll
    for (int j = 0; j < kMaxN; ++j) {
      if (j >= n) break;
      const float post = __ldg(a.h_post + t * a.hp_t + j * a.hp_j);
      float o[kW];
#pragma unroll
      for (int e = 0; e < kW; ++e) o[e] = post * yv[e];
#pragma unroll
      for (int i = 0; i < kMaxN; ++i) {
        if (i >= n) break;
        const float r = __ldg(res + j * a.hr_j + i * a.hr_i);
#pragma unroll
        for (int e = 0; e < kW; ++e) o[e] += r * xv[i][e];
      }
      store_floats<T, kW>(static_cast<T*>(a.x_out) + t * a.xo_t + j * a.xo_s + c, o);
    }
  }
}

template <typename T, int kW, int kN>
__global__ void __launch_bounds__(kRowBlockThreads)
    mhc_post_mix_backward_kernel(const __grid_constant__ PostMixArgs a) {
  constexpr int kMaxN = kN > 0 ? kN : kMhcMaxStreams;
  constexpr int kDots = kMaxN * kMaxN + kMaxN;  // dh_res[j][i] at j * kMaxN + i, then dh_post[j]
  __shared__ TokenCoeffs<kMaxN> h;
  __shared__ float partial[kRowBlockThreads / 32][kDots];
  const int n = kN > 0 ? kN : a.n;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    stage_coeffs<kMaxN>(a, n, t, h);
    __syncthreads();
    float dot[kDots] = {};
    for (int c = threadIdx.x * kW; c < a.cols; c += blockDim.x * kW) {
      float g[kMaxN][kW], yv[kW], d[kW];
      load_streams<T, kW, kMaxN>(static_cast<const T*>(a.x_out) + t * a.xo_t + c, a.xo_s, n, g);
      load_floats<T, kW>(static_cast<const T*>(a.y) + t * a.y_t + c, yv);
      // n = 4 issues every x load before the first store: the compiler cannot move a load above
      // a store (dx may alias x as far as it knows), and that store (dy) waits for the g rows,
      // so x loaded after it would cost a second memory round trip a column step. The general
      // instance takes that trip to hold its registers (n = 8: g is 64 floats, the dots 72).
      constexpr int kHeld = kN > 0 ? kMaxN : 1;
      float xv[kHeld][kW];
      const T* x_row = static_cast<const T*>(a.x) + t * a.x_t + c;
      if constexpr (kN > 0) load_streams<T, kW, kMaxN>(x_row, a.x_s, n, xv);
      backward_row<kW, kMaxN>(n, g, yv, h.post, 1, dot + kMaxN * kMaxN, 1, d);
      store_floats<T, kW>(static_cast<T*>(a.dy) + t * a.dy_t + c, d);
#pragma unroll
      for (int i = 0; i < kMaxN; ++i) {
        if (i >= n) break;
        if constexpr (kN == 0) load_floats<T, kW>(x_row + i * a.x_s, xv[0]);
        backward_row<kW, kMaxN>(n, g, xv[kN > 0 ? i : 0], &h.res[0][i], kMaxN, dot + i, kMaxN, d);
        store_floats<T, kW>(static_cast<T*>(a.dx) + t * a.dx_t + i * a.dx_s + c, d);
      }
    }
#pragma unroll
    for (int k = 0; k < kDots; ++k) {
      const int j = k < kMaxN * kMaxN ? k / kMaxN : k - kMaxN * kMaxN;
      const int i = k < kMaxN * kMaxN ? k % kMaxN : 0;
      if (j >= n || i >= n) continue;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) dot[k] += __shfl_xor_sync(~0u, dot[k], o);
      if (lane == 0) partial[warp][k] = dot[k];
    }
    __syncthreads();
    // Blocks of one warp (small C) have fewer threads than n(n + 1) outputs.
    for (int e = threadIdx.x; e < n * n + n; e += blockDim.x) {
      const int k = e < n * n ? (e / n) * kMaxN + e % n : kMaxN * kMaxN + (e - n * n);
      float s = 0.f;
      for (int w = 0; w < warps; ++w) s += partial[w][k];
      if (e < n * n) {
        a.dh_res[(t * n + e / n) * a.dhr_row + e % n] = s;
      } else {
        a.dh_post[t * a.dhp_t + (e - n * n)] = s;
      }
    }
    __syncthreads();  // h and partial are rewritten for the next token
  }
}

bool streams_aligned(const MhcStreams& s, int64_t tokens, int n, int width) {
  if (s.data == nullptr) return true;
  return reinterpret_cast<uintptr_t>(s.data) % 16 == 0 &&
         (tokens <= 1 || s.token_stride % width == 0) && (n <= 1 || s.stream_stride % width == 0);
}

}  // namespace

std::string mhc_post_mix(const MhcPostMixProblem& p, Stream stream) {
  if (p.cols > (int64_t{1} << 30)) {
    throw_arg_error(p.op, "x", "last dim C <= 2^30 on CUDA", std::to_string(p.cols));
  }
  const int w = 16 / static_cast<int>(dtype_size(p.dtype));
  const bool vec =
      rows_vector_aligned(p.cols, w, {&p.y, &p.dy}) && streams_aligned(p.x, p.tokens, p.n, w) &&
      streams_aligned(p.x_out, p.tokens, p.n, w) && streams_aligned(p.dx, p.tokens, p.n, w);
  const PostMixArgs args{p.x.data,
                         p.x_out.data,
                         p.y.data,
                         p.dx.data,
                         p.dy.data,
                         p.h_res.data,
                         p.h_post.data,
                         static_cast<float*>(p.dh_res.data),
                         static_cast<float*>(p.dh_post.data),
                         p.tokens,
                         p.n,
                         static_cast<int>(p.cols),
                         p.x.token_stride,
                         p.x.stream_stride,
                         p.x_out.token_stride,
                         p.x_out.stream_stride,
                         p.dx.token_stride,
                         p.dx.stream_stride,
                         p.y.row_stride,
                         p.dy.row_stride,
                         p.dh_res.row_stride,
                         p.dh_post.row_stride,
                         p.h_res.strides[0],
                         p.h_res.strides[1],
                         p.h_res.strides[2],
                         p.h_post.strides[0],
                         p.h_post.strides[1]};
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.n == 4, [&](auto n4) {
      constexpr int kN = decltype(n4)::value ? 4 : 0;
      dispatch_bool(vec, [&](auto v) {
        constexpr int kW = decltype(v)::value ? 16 / sizeof(T) : 1;
        std::string shape;
        if (p.backward) {
          const int threads = token_block_threads(p.cols, kW);
          const auto blocks = static_cast<unsigned>(std::min<int64_t>(p.tokens, 1 << 20));
          if (p.tokens > 0) {
            mhc_post_mix_backward_kernel<T, kW, kN><<<blocks, threads, 0, stream>>>(args);
            KILN_CUDA_CHECK(cudaGetLastError());
          }
          shape = ",threads" + std::to_string(threads);
        } else {
          const RowLaunch launch = row_launch(p.tokens, p.cols, kW);
          if (p.tokens > 0 && p.cols > 0) {
            mhc_post_mix_kernel<T, kW, kN><<<launch.grid, launch.block, 0, stream>>>(args);
            KILN_CUDA_CHECK(cudaGetLastError());
          }
          shape = ",tpr" + std::to_string(launch.threads_per_row) + ",rpb" +
                  std::to_string(launch.rows_per_block);
        }
        variant = std::string(p.backward ? "mhc_post_mix_backward<" : "mhc_post_mix<") +
                  std::string(dtype_name(p.dtype)) + (kN ? ",n4" : ",n<=8") + ",vec" +
                  std::to_string(kW) + shape + ">";
      });
    });
  });
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
