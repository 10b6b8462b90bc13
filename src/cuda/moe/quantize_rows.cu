// Rows to e4m3 in 1 x 128 groups (quantize_rows_launch.h). A block of 128 threads a row; a thread
// takes 8 consecutive elements a pass, so 16 lanes (half a warp) cover a group and its absmax is
// four xor shuffles that stay inside the half.
#include <cuda_runtime.h>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/fp8_pack.cuh"
#include "cuda/moe/quantize_rows_launch.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kElems = 8;  // a thread's elements a pass: 16 bytes of bf16/f16
constexpr int kGroup = 128;
static_assert(kGroup / kElems == 16, "a group is half a warp");

// kVector: x's rows are 16-byte aligned (one access a thread a pass), else element loads.
template <typename T, bool kVector>
__global__ void __launch_bounds__(kThreads)
    quantize_rows_kernel(const __grid_constant__ QuantizeRowsArgs a) {
  const int64_t row = blockIdx.x;
  if (a.rows_used != nullptr && row >= *a.rows_used) return;  // uniform over the block
  const T* x = static_cast<const T*>(a.x) + row * a.x_stride;
  uint8_t* q = a.q + row * a.cols;
  float* scales = a.scales + row * ((a.cols + kGroup - 1) / kGroup);
  const int lane = threadIdx.x % 32;
  // Every thread runs every pass: the shuffles need the whole half-warp.
  for (int64_t base = 0; base < a.cols; base += int64_t{kThreads} * kElems) {
    const int64_t c = base + int64_t{threadIdx.x} * kElems;
    const bool in = c < a.cols;  // cols % 8 == 0: a thread's 8 are all in or all out
    float v[kElems] = {};
    if (in) {
      if constexpr (kVector) {
        load_floats<T, kElems>(x + c, v);
      } else {
#pragma unroll
        for (int m = 0; m < kElems; ++m) v[m] = to_float(x[c + m]);
      }
    }
    float amax = 0.f;
#pragma unroll
    for (int m = 0; m < kElems; ++m) amax = fmaxf(amax, fabsf(v[m]));  // fmaxf ignores NaN
#pragma unroll
    for (int o = 8; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(~0u, amax, o));
    const float scale = fmaxf(amax, 1e-4f) / kFp8Max<__NV_E4M3>;
    if (in) {
      *reinterpret_cast<Pack<uint8_t, kElems>*>(q + c) = to_fp8<__NV_E4M3, kElems>(v, 1.f / scale);
      if (lane % 16 == 0) scales[c / kGroup] = scale;
    }
  }
}

}  // namespace

void quantize_rows_e4m3(const QuantizeRowsArgs& a, DType x_dtype, Stream stream) {
  if (a.rows == 0 || a.cols == 0) return;
  if (a.cols % kElems != 0) {
    throw Error("quantize_rows_e4m3: cols must be a multiple of 8, got " + std::to_string(a.cols));
  }
  const bool vector = a.x_stride % kElems == 0 && reinterpret_cast<uintptr_t>(a.x) % 16 == 0;
  const auto s = static_cast<cudaStream_t>(stream);
  dispatch_value<DType::bf16, DType::f16>(x_dtype, "quantize_rows_e4m3", [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(vector, [&](auto vec) {
      quantize_rows_kernel<T, decltype(vec)::value>
          <<<static_cast<unsigned>(a.rows), kThreads, 0, s>>>(a);
    });
  });
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kiln::cuda
