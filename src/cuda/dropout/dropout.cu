// bias_dropout_add forward and backward. Elementwise kernels (one access of kW elements a thread
// a row, rows walked by blockIdx.y) draw the Philox mask for each group of four elements; the
// backward's dbias is a second kernel that regenerates the mask over dout, one block a strip of 32
// columns walking every row, folded in a fixed order (same bits every run, no atomics).
#include <algorithm>
#include <string>

#include "core/dispatch.h"
#include "core/philox.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/row_launch.h"
#include "cuda/dropout/dropout_launch.h"

namespace kiln::cuda {
namespace {

struct DropoutArgs {
  const void* x;         // forward x / backward dout
  const void* residual;  // forward only
  const void* bias;      // forward bias [cols] or null
  void* out;             // forward out / backward dx
  int64_t rows;
  int cols;
  int64_t x_stride, residual_stride, out_stride;
  float p, scale;
  bool masked;
  uint64_t seed, offset;
};

// The scale of elements [i, i + kW) of the stream: 1/(1-p) if kept, 0 if dropped, 1 unmasked.
template <int kW>
__device__ __forceinline__ void element_scales(const DropoutArgs& a, uint64_t i, float (&s)[kW]) {
  if (!a.masked) {
#pragma unroll
    for (int k = 0; k < kW; ++k) s[k] = 1.f;
    return;
  }
  if constexpr (kW % 4 == 0) {  // i is a multiple of 4 on the vector path (cols % kW == 0)
#pragma unroll
    for (int g = 0; g < kW / 4; ++g) {
      float u[4];
      philox::uniforms4(a.seed, a.offset, i / 4 + g, u);
#pragma unroll
      for (int k = 0; k < 4; ++k) s[4 * g + k] = u[k] >= a.p ? a.scale : 0.f;
    }
  } else {
#pragma unroll
    for (int k = 0; k < kW; ++k) {
      s[k] = philox::uniform(a.seed, a.offset, i + k) >= a.p ? a.scale : 0.f;
    }
  }
}

template <typename T, int kW, bool kBackward>
__global__ void __launch_bounds__(kRowBlockThreads)
    dropout_kernel(const __grid_constant__ DropoutArgs a) {
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * kW;
  if (c >= a.cols) return;
  float b[kW];
  if (!kBackward && a.bias) {
    load_floats<T, kW>(static_cast<const T*>(a.bias) + c, b);
  } else {
#pragma unroll
    for (int k = 0; k < kW; ++k) b[k] = 0.f;
  }
  const int64_t step = int64_t{gridDim.y} * blockDim.y;
  for (int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r < a.rows; r += step) {
    float v[kW], s[kW], out[kW];
    load_floats<T, kW>(static_cast<const T*>(a.x) + r * a.x_stride + c, v);
    element_scales<kW>(a, static_cast<uint64_t>(r * a.cols + c), s);
    if constexpr (kBackward) {
#pragma unroll
      for (int k = 0; k < kW; ++k) out[k] = v[k] * s[k];
    } else {
      float res[kW];
      load_floats<T, kW>(static_cast<const T*>(a.residual) + r * a.residual_stride + c, res);
#pragma unroll
      for (int k = 0; k < kW; ++k) out[k] = res[k] + (v[k] + b[k]) * s[k];
    }
    store_floats<T, kW>(static_cast<T*>(a.out) + r * a.out_stride + c, out);
  }
}

// dbias[c] = sum over rows of dout * scale: thread (tx, ty) sums rows ty, ty + 32, ... of column
// blockIdx.x * 32 + tx, then thread ty = 0 adds the 32 chains in order.
template <typename T>
__global__ void __launch_bounds__(1024)
    dbias_kernel(const __grid_constant__ DropoutArgs a, T* dbias) {
  __shared__ float chains[32][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < a.cols) {
    for (int64_t r = threadIdx.y; r < a.rows; r += 32) {
      float s[1];
      element_scales<1>(a, static_cast<uint64_t>(r * a.cols + c), s);
      acc += to_float(static_cast<const T*>(a.x)[r * a.x_stride + c]) * s[0];
    }
  }
  chains[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < a.cols) {
    float total = 0.f;
    for (int j = 0; j < 32; ++j) total += chains[j][threadIdx.x];
    dbias[c] = from_float<T>(total);
  }
}

}  // namespace

std::string bias_dropout_add(const DropoutProblem& p, Stream stream) {
  if (p.cols > (int64_t{1} << 30)) {
    throw_arg_error(p.op, "x", "last dim N <= 2^30 on CUDA", std::to_string(p.cols));
  }
  const int w = 16 / static_cast<int>(dtype_size(p.dtype));
  const bool bias_ok =
      p.bias == nullptr || p.backward || reinterpret_cast<uintptr_t>(p.bias) % 16 == 0;
  const bool vec = bias_ok && rows_vector_aligned(p.cols, w, {&p.x, &p.residual, &p.out});
  const DropoutArgs args{p.x.data,
                         p.residual.data,
                         p.backward ? nullptr : p.bias,
                         p.out.data,
                         p.rows,
                         static_cast<int>(p.cols),
                         p.x.row_stride,
                         p.residual.row_stride,
                         p.out.row_stride,
                         p.p,
                         p.scale,
                         p.masked,
                         p.seed,
                         p.offset};
  const RowLaunch launch = row_launch(p.rows, p.cols, vec ? w : 1);
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.backward, [&](auto bwd) {
      dispatch_bool(vec, [&](auto v) {
        constexpr int kW = decltype(v)::value ? 16 / sizeof(T) : 1;
        if (p.rows > 0 && p.cols > 0) {
          dropout_kernel<T, kW, decltype(bwd)::value>
              <<<launch.grid, launch.block, 0, stream>>>(args);
          KILN_CUDA_CHECK(cudaGetLastError());
        }
        variant = std::string(p.backward ? "dropout_backward<" : "dropout_forward<") +
                  std::string(dtype_name(p.dtype)) + ",vec" + std::to_string(kW) +
                  (p.masked ? ",masked" : ",unmasked") + ",tpr" +
                  std::to_string(launch.threads_per_row) + ",rpb" +
                  std::to_string(launch.rows_per_block) + ">";
      });
      if (p.backward && p.bias && p.cols > 0) {
        const dim3 dgrid(static_cast<unsigned>((p.cols + 31) / 32));
        dbias_kernel<T><<<dgrid, dim3(32, 32), 0, stream>>>(args, static_cast<T*>(p.bias));
        KILN_CUDA_CHECK(cudaGetLastError());
        variant += " + dbias_columns";
      }
    });
  });
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
