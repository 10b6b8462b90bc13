// Sinkhorn-Knopp over a batch of small n x n matrices, all iterations in one launch. A block of
// 64 threads holds G = 64 / n matrices (n <= 64) in shared memory, rows padded to n + 1 floats
// (no bank conflicts on column walks); thread (m, i) owns row i and column i of matrix m.
// The backward recomputes the iterates from the logits (O(iters^2) small steps), never storing
// them: for each step from the last to the first it replays the forward up to that step's input.
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

}  // namespace

std::string sinkhorn_knopp(const SinkhornProblem& p, Stream stream) {
  if (p.batch == 0) return "empty";
  const int per_block = kThreads / p.n;
  const int mats = p.backward ? 4 : 2;
  const size_t smem = static_cast<size_t>(mats) * per_block * p.n * (p.n + 1) * sizeof(float);
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
      variant = std::string(p.backward ? "sinkhorn_backward<" : "sinkhorn<") +
                std::string(dtype_name(p.dtype)) + ",n" + std::to_string(p.n) + ",mats_per_block" +
                std::to_string(per_block) + ",iters" + std::to_string(p.iters) + ">";
    });
  });
  return variant;
}

}  // namespace kiln::cuda
