// Sinkhorn-Knopp over a batch of small n x n matrices, all iterations in one launch.
// - n <= 4 (mHC's n = 4 is the hot case): one thread a matrix, held in registers, no barriers.
// - larger n: a block of 64 threads holds G = 64 / n matrices in shared memory, rows padded to
//   n + 1 floats (no bank conflicts on column walks); thread (m, i) owns row i and column i of
//   matrix m.
// The backward recomputes the iterates from the logits, never storing them: for each step from
// the last to the first it replays the forward up to that step's input (the register kernel
// replays from a checkpoint at the start of the step's segment: O(iters^2 / K + iters K) steps
// instead of O(iters^2)).
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/mhc/sinkhorn_launch.h"
#include "kiln/ops/mhc.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 64;

struct SinkhornArgs {
  const void* logits;
  const void* dout;  // backward only
  void* out;         // forward out / backward dlogits
  int64_t batch;
  int n, iters;
  float eps;
  int64_t logits_stride, dout_stride, out_stride;  // row strides of the [B * n, n] views
};

// A padded n x n matrix in shared memory.
struct Mat {
  float* base;
  int pitch;
  __device__ float& operator()(int i, int j) const { return base[i * pitch + j]; }
};

// Divides line `line` (a row if rows, else a column) by its sum + eps.
__device__ __forceinline__ void normalize(const Mat& a, int n, int line, bool rows, float eps) {
  float s = 0.f;
  for (int k = 0; k < n; ++k) s += rows ? a(line, k) : a(k, line);
  const float inv = 1.f / (s + eps);
  for (int k = 0; k < n; ++k) (rows ? a(line, k) : a(k, line)) *= inv;
}

// g <- the gradient of a line's normalisation's input, given its input x: (g - sum(g y)) / (s+eps).
__device__ __forceinline__ void normalize_backward(const Mat& x, const Mat& g, int n, int line,
                                                   bool rows, float eps) {
  float s = 0.f, dot = 0.f;
  for (int k = 0; k < n; ++k) s += rows ? x(line, k) : x(k, line);
  const float inv = 1.f / (s + eps);
  for (int k = 0; k < n; ++k) {
    dot += (rows ? g(line, k) : g(k, line)) * (rows ? x(line, k) : x(k, line)) * inv;
  }
  for (int k = 0; k < n; ++k) {
    float& v = rows ? g(line, k) : g(k, line);
    v = (v - dot) * inv;
  }
}

template <typename T, bool kBackward>
__global__ void __launch_bounds__(kThreads)
    sinkhorn_kernel(const __grid_constant__ SinkhornArgs a) {
  extern __shared__ float smem[];
  const int n = a.n, per_block = kThreads / n, pitch = n + 1, mat_floats = n * pitch;
  const int m = threadIdx.x / n, i = threadIdx.x % n;
  const int64_t b = int64_t{blockIdx.x} * per_block + m;
  const bool active = m < per_block && b < a.batch;
  // Per matrix slot: a0 (exp of the shifted logits), work, and for the backward x and g.
  float* slot = smem + (kBackward ? 4 : 2) * mat_floats * (m < per_block ? m : 0);
  const Mat a0{slot, pitch}, work{slot + mat_floats, pitch};
  const Mat x{slot + 2 * mat_floats, pitch}, g{slot + 3 * mat_floats, pitch};
  auto sync = [&] { __syncthreads(); };

  if (active) {
    for (int j = 0; j < n; ++j) {
      a0(i, j) = to_float(static_cast<const T*>(a.logits)[(b * n + i) * a.logits_stride + j]);
    }
  }
  sync();
  // The matrix max: each thread scans the whole matrix (n <= 64: at most 4096 reads a thread in
  // shared memory, a tiny cost next to the iterations), then exponentiates its own row.
  float top = -INFINITY;
  if (active) {
    for (int r = 0; r < n; ++r) {
      for (int j = 0; j < n; ++j) top = fmaxf(top, a0(r, j));
    }
  }
  sync();
  if (active) {
    for (int j = 0; j < n; ++j) a0(i, j) = expf(a0(i, j) - top);
  }
  sync();
  // forward(steps): work = a0 after `steps` half-steps (row, column, row, ...).
  auto replay = [&](int steps) {
    if (active) {
      for (int j = 0; j < n; ++j) work(i, j) = a0(i, j);
    }
    sync();
    for (int s = 0; s < steps; ++s) {
      if (active) normalize(work, n, i, s % 2 == 0, a.eps);
      sync();
    }
  };
  if constexpr (!kBackward) {
    replay(2 * a.iters);
    if (active) {
      for (int j = 0; j < n; ++j) {
        static_cast<T*>(a.out)[(b * n + i) * a.out_stride + j] = from_float<T>(work(i, j));
      }
    }
    return;
  } else {
    if (active) {
      for (int j = 0; j < n; ++j) {
        g(i, j) = to_float(static_cast<const T*>(a.dout)[(b * n + i) * a.dout_stride + j]);
      }
    }
    for (int step = 2 * a.iters - 1; step >= 0; --step) {
      replay(step);  // work = the input of half-step `step`
      if (active) {
        for (int j = 0; j < n; ++j) x(i, j) = work(i, j);
      }
      sync();
      if (active) normalize_backward(x, g, n, i, step % 2 == 0, a.eps);
      sync();
    }
    if (active) {
      for (int j = 0; j < n; ++j) {
        static_cast<T*>(a.out)[(b * n + i) * a.out_stride + j] = from_float<T>(g(i, j) * a0(i, j));
      }
    }
  }
}

// --- n <= 4: a matrix a thread ---------------------------------------------------------------

constexpr int kSmallThreads = 128;
constexpr int kSmallMaxN = 4;
// Half-steps a backward segment replays from its checkpoint.
constexpr int kSegment = 6;

template <int N>
struct Small {
  float v[N][N];
};

// Element k of line l: row l if kRows, else column l (compile-time, so the matrix stays in
// registers; a runtime choice of which element to reference would send it to local memory).
template <bool kRows, int N>
__device__ __forceinline__ float& at(Small<N>& m, int l, int k) {
  return kRows ? m.v[l][k] : m.v[k][l];
}

template <bool kRows, int N>
__device__ __forceinline__ void normalize_lines(Small<N>& m, float eps) {
#pragma unroll
  for (int l = 0; l < N; ++l) {
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < N; ++k) sum += at<kRows>(m, l, k);
    const float inv = 1.f / (sum + eps);
#pragma unroll
    for (int k = 0; k < N; ++k) at<kRows>(m, l, k) *= inv;
  }
}

// g <- the gradient of the lines' input x, given the gradient g of their output:
// (g - sum_k g_k y_k) / (s + eps) with y = x / (s + eps).
template <bool kRows, int N>
__device__ __forceinline__ void normalize_lines_backward(Small<N>& x, Small<N>& g, float eps) {
#pragma unroll
  for (int l = 0; l < N; ++l) {
    float sum = 0.f, dot = 0.f;
#pragma unroll
    for (int k = 0; k < N; ++k) sum += at<kRows>(x, l, k);
    const float inv = 1.f / (sum + eps);
#pragma unroll
    for (int k = 0; k < N; ++k) dot += at<kRows>(g, l, k) * at<kRows>(x, l, k);
    dot *= inv;
#pragma unroll
    for (int k = 0; k < N; ++k) at<kRows>(g, l, k) = (at<kRows>(g, l, k) - dot) * inv;
  }
}

// Half-step s of the forward: rows on even s, columns on odd s.
template <int N>
__device__ __forceinline__ void half_step(Small<N>& m, int s, float eps) {
  if (s % 2 == 0) {
    normalize_lines<true>(m, eps);
  } else {
    normalize_lines<false>(m, eps);
  }
}

template <int N>
__device__ __forceinline__ void half_step_backward(Small<N>& x, Small<N>& g, int s, float eps) {
  if (s % 2 == 0) {
    normalize_lines_backward<true>(x, g, eps);
  } else {
    normalize_lines_backward<false>(x, g, eps);
  }
}

template <typename T, int N>
__device__ __forceinline__ void load_small(const void* base, int64_t b, int64_t stride,
                                           Small<N>& m) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < N; ++j)
      m.v[i][j] = to_float(static_cast<const T*>(base)[(b * N + i) * stride + j]);
  }
}

template <typename T, int N, bool kBackward>
__global__ void __launch_bounds__(kSmallThreads)
    sinkhorn_small_kernel(const __grid_constant__ SinkhornArgs a) {
  const int64_t b = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (b >= a.batch) return;
  Small<N> a0;
  load_small<T, N>(a.logits, b, a.logits_stride, a0);
  float top = -INFINITY;
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < N; ++j) top = fmaxf(top, a0.v[i][j]);
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < N; ++j) a0.v[i][j] = expf(a0.v[i][j] - top);
  }
  const int steps = 2 * a.iters;
  Small<N> result;
  if constexpr (!kBackward) {
    result = a0;
    for (int s = 0; s < steps; ++s) half_step(result, s, a.eps);
  } else {
    Small<N>& g = result;
    load_small<T, N>(a.dout, b, a.dout_stride, g);
    // Segments of kSegment half-steps, last first: the segment's input (the checkpoint) is
    // replayed from a0 once, each step's input from the checkpoint.
    for (int start = steps > 0 ? (steps - 1) / kSegment * kSegment : -1; start >= 0;
         start -= kSegment) {
      Small<N> checkpoint = a0;
      for (int s = 0; s < start; ++s) half_step(checkpoint, s, a.eps);
      for (int step = min(start + kSegment, steps) - 1; step >= start; --step) {
        Small<N> x = checkpoint;
        for (int s = start; s < step; ++s) half_step(x, s, a.eps);
        half_step_backward(x, g, step, a.eps);
      }
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
#pragma unroll
      for (int j = 0; j < N; ++j) g.v[i][j] *= a0.v[i][j];  // through exp (max held constant)
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int j = 0; j < N; ++j)
      static_cast<T*>(a.out)[(b * N + i) * a.out_stride + j] = from_float<T>(result.v[i][j]);
  }
}

}  // namespace

std::string sinkhorn_knopp(const SinkhornProblem& p, Stream stream) {
  if (p.batch == 0) return "empty";
  const SinkhornArgs args{p.logits.data,
                          p.dout.data,
                          p.out.data,
                          p.batch,
                          p.n,
                          p.iters,
                          static_cast<float>(p.eps),
                          p.logits.row_stride,
                          p.dout.row_stride,
                          p.out.row_stride};
  const std::string name = std::string(p.backward ? "sinkhorn_backward<" : "sinkhorn<") +
                           std::string(dtype_name(p.dtype)) + ",n" + std::to_string(p.n);
  if (p.n <= kSmallMaxN) {
    const int64_t blocks = (p.batch + kSmallThreads - 1) / kSmallThreads;
    if (blocks > int64_t{0x7fffffff}) {
      throw_arg_error(p.op, "logits", "B <= 2^31 - 1 blocks of matrices", std::to_string(p.batch));
    }
    dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
      using T = typename CudaType<decltype(dt)::value>::type;
      dispatch_value<1, 2, 3, 4>(p.n, "sinkhorn_knopp n", [&](auto n) {
        dispatch_bool(p.backward, [&](auto bwd) {
          sinkhorn_small_kernel<T, decltype(n)::value, decltype(bwd)::value>
              <<<static_cast<unsigned>(blocks), kSmallThreads, 0, stream>>>(args);
          KILN_CUDA_CHECK(cudaGetLastError());
        });
      });
    });
    return name + ",registers,iters" + std::to_string(p.iters) + ">";
  }
  const int per_block = kThreads / p.n;
  const int mats = p.backward ? 4 : 2;
  const size_t smem = static_cast<size_t>(mats) * per_block * p.n * (p.n + 1) * sizeof(float);
  const int64_t blocks = (p.batch + per_block - 1) / per_block;
  if (blocks > int64_t{0x7fffffff}) {
    throw_arg_error(p.op, "logits", "B <= 2^31 - 1 blocks of matrices", std::to_string(p.batch));
  }
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.backward, [&](auto bwd) {
      auto kernel = sinkhorn_kernel<T, decltype(bwd)::value>;
      KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
      kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(args);
      KILN_CUDA_CHECK(cudaGetLastError());
      variant = name + ",mats_per_block" + std::to_string(per_block) + ",iters" +
                std::to_string(p.iters) + ">";
    });
  });
  return variant;
}

}  // namespace kiln::cuda
