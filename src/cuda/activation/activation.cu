// Activations, forward and backward: one elementwise kernel body for every op and dtype.
// Bytes: each input read once, each output written once. A block holds rows_per_block rows of
// threads_per_row threads, each thread one access (16 bytes when every row is aligned) a row,
// walking rows blockIdx.y, + gridDim.y * rows_per_block, ...
#include <algorithm>
#include <string>

#include "core/dispatch.h"
#include "cuda/activation/activation_launch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/row_launch.h"

namespace kiln::cuda {
namespace {

struct ActivationArgs {
  const void* a;
  const void* b;   // null for relu2
  const void* dy;  // backward only
  void* out0;
  void* out1;  // null when the op has one output
  int64_t rows;
  int cols;
  int64_t a_stride, b_stride, dy_stride, out0_stride, out1_stride;
};

template <typename T, int kW, act::Kind kKind, bool kBackward>
__global__ void __launch_bounds__(kRowBlockThreads)
    activation_kernel(const __grid_constant__ ActivationArgs p) {
  constexpr bool kTwoInputs = kKind != act::Kind::relu2;
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * kW;
  if (c >= p.cols) return;
  const int64_t step = int64_t{gridDim.y} * blockDim.y;
  for (int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r < p.rows; r += step) {
    float a[kW], b[kW];
    load_floats<T, kW>(static_cast<const T*>(p.a) + r * p.a_stride + c, a);
    if constexpr (kTwoInputs) {
      load_floats<T, kW>(static_cast<const T*>(p.b) + r * p.b_stride + c, b);
    } else {
#pragma unroll
      for (int k = 0; k < kW; ++k) b[k] = 0.f;
    }
    if constexpr (!kBackward) {
      float y[kW];
#pragma unroll
      for (int k = 0; k < kW; ++k) y[k] = act::forward<float>(kKind, a[k], b[k]);
      store_floats<T, kW>(static_cast<T*>(p.out0) + r * p.out0_stride + c, y);
    } else {
      float g[kW], da[kW], db[kW];
      load_floats<T, kW>(static_cast<const T*>(p.dy) + r * p.dy_stride + c, g);
#pragma unroll
      for (int k = 0; k < kW; ++k) act::backward<float>(kKind, a[k], b[k], g[k], da[k], db[k]);
      store_floats<T, kW>(static_cast<T*>(p.out0) + r * p.out0_stride + c, da);
      if constexpr (kTwoInputs) {
        store_floats<T, kW>(static_cast<T*>(p.out1) + r * p.out1_stride + c, db);
      }
    }
  }
}

}  // namespace

std::string activation(const ActivationProblem& p, Stream stream) {
  if (p.rows == 0 || p.cols == 0) return "empty";
  if (p.cols > (int64_t{1} << 30)) {
    throw_arg_error(p.op, "x", "last dim N <= 2^30 on CUDA", std::to_string(p.cols));
  }
  const int w = 16 / static_cast<int>(dtype_size(p.dtype));
  const bool vec = rows_vector_aligned(p.cols, w, {&p.a, &p.b, &p.dy, &p.out0, &p.out1});
  const ActivationArgs args{p.a.data,
                            p.b.data,
                            p.dy.data,
                            p.out0.data,
                            p.out1.data,
                            p.rows,
                            static_cast<int>(p.cols),
                            p.a.row_stride,
                            p.b.row_stride,
                            p.dy.row_stride,
                            p.out0.row_stride,
                            p.out1.row_stride};
  const RowLaunch launch = row_launch(p.rows, p.cols, vec ? w : 1);
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_value<act::Kind::relu2, act::Kind::swiglu, act::Kind::gelu_erf, act::Kind::gelu_tanh>(
        p.kind, p.op, [&](auto kind) {
          dispatch_bool(p.backward, [&](auto bwd) {
            dispatch_bool(vec, [&](auto v) {
              constexpr int kW = decltype(v)::value ? 16 / sizeof(T) : 1;
              activation_kernel<T, kW, decltype(kind)::value, decltype(bwd)::value>
                  <<<launch.grid, launch.block, 0, stream>>>(args);
              KILN_CUDA_CHECK(cudaGetLastError());
              variant = std::string("activation_") + (p.backward ? "backward<" : "forward<") +
                        act::kind_name(p.kind) + "," + std::string(dtype_name(p.dtype)) + ",vec" +
                        std::to_string(kW) + ",tpr" + std::to_string(launch.threads_per_row) +
                        ",rpb" + std::to_string(launch.rows_per_block) + ">";
            });
          });
        });
  });
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
