// The per-tensor absmax pass: row_launch's shape (threads across a row, one access each, rows
// down the block), each thread folding max |x| over a strided set of rows with four accesses in
// flight, the block's maximum folded into one fp32 word by atomicMax on its bits. The values are
// non-negative (NaN dropped by fmaxf), whose order as unsigned integers is their order as
// floats, and max is exact and order-free: the word ends with the same bits on every run.
// Bytes: x read once.
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/row_launch.h"
#include "cuda/quantize/quantize_kernels.h"

namespace kiln::cuda {
namespace {

template <typename T, int W>
__global__ void __launch_bounds__(kRowBlockThreads)
    absmax_kernel(const T* x, int64_t stride, int64_t rows, int64_t cols, uint32_t* amax_bits) {
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * W;
  float m = 0.f;
  auto fold = [&](const Pack<T, W>& p) {
    float f[W];
    widen(p, f);
#pragma unroll
    for (int k = 0; k < W; ++k) m = fmaxf(m, fabsf(f[k]));
  };
  auto at = [&](int64_t r) { return *reinterpret_cast<const Pack<T, W>*>(x + r * stride + c); };
  if (c < cols) {
    const int64_t step = int64_t{gridDim.y} * blockDim.y;
    int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y;
    for (; r + 3 * step < rows; r += 4 * step) {
      Pack<T, W> p[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) p[u] = at(r + u * step);
#pragma unroll
      for (int u = 0; u < 4; ++u) fold(p[u]);
    }
    for (; r < rows; r += step) fold(at(r));
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  __shared__ float warp_max[kRowBlockThreads / 32];
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  if (tid % 32 == 0) warp_max[tid / 32] = m;
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < kRowBlockThreads / 32; ++w) m = fmaxf(m, warp_max[w]);
    if (m > 0.f) atomicMax(amax_bits, __float_as_uint(m));
  }
}

}  // namespace

void launch_absmax(const void* x, int64_t x_stride, int64_t rows, int64_t cols, DType x_dtype,
                   int vec_width, uint32_t* amax_bits, int sm_count, cudaStream_t stream) {
  if (rows == 0) return;
  RowLaunch l = row_launch(rows, cols, vec_width);
  l.grid.y = static_cast<unsigned>(absmax_grid_y(l.grid.y, l.grid.x, sm_count));
  dispatch_value<DType::f32, DType::bf16, DType::f16>(x_dtype, "quantize_fp8", [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(vec_width > 1, [&](auto vec) {
      constexpr int kW = decltype(vec)::value ? 16 / static_cast<int>(sizeof(T)) : 1;
      absmax_kernel<T, kW><<<l.grid, l.block, 0, stream>>>(static_cast<const T*>(x), x_stride, rows,
                                                           cols, amax_bits);
      KILN_CUDA_CHECK(cudaGetLastError());
    });
  });
}

}  // namespace kiln::cuda
