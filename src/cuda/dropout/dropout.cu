// bias_dropout_add forward and backward. Elementwise kernels (one access of kW elements a thread
// a row, rows walked by blockIdx.y) draw the Philox mask for each group of four elements. With
// dbias, the backward also sums its dx columns over the rows each row slot walks into one fp32
// partial row a slot (a workspace; dropout_config.h caps the slots), and a second kernel folds the
// partial rows in a fixed order: the same bits every run, no atomics, and dout read once.
#include <algorithm>
#include <string>

#include "core/dispatch.h"
#include "core/philox.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/fold_columns.cuh"
#include "cuda/common/row_launch.h"
#include "cuda/dropout/dropout_config.h"
#include "cuda/dropout/dropout_launch.h"

namespace kiln::cuda {
namespace {

struct DropoutArgs {
  const void* x;          // forward x / backward dout
  const void* residual;   // forward only
  const void* bias;       // forward bias [cols] or null
  void* out;              // forward out / backward dx
  float* dbias_partials;  // backward with dbias: [row slots, cols] fp32, else null
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

template <typename T, int kW, bool kBackward, bool kDbias = false>
__global__ void __launch_bounds__(kRowBlockThreads)
    dropout_kernel(const __grid_constant__ DropoutArgs a) {
  static_assert(kBackward || !kDbias, "dbias is a backward output");
  if constexpr (kDbias) allow_dependents();  // the dbias fold may be scheduled behind this grid
  const int c = (blockIdx.x * blockDim.x + threadIdx.x) * kW;
  if (c >= a.cols) return;
  float col_sum[kW] = {};
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
      if constexpr (kDbias) {
#pragma unroll
        for (int k = 0; k < kW; ++k) col_sum[k] += out[k];
      }
    } else {
      float res[kW];
      load_floats<T, kW>(static_cast<const T*>(a.residual) + r * a.residual_stride + c, res);
#pragma unroll
      for (int k = 0; k < kW; ++k) out[k] = res[k] + (v[k] + b[k]) * s[k];
    }
    store_floats<T, kW>(static_cast<T*>(a.out) + r * a.out_stride + c, out);
  }
  if constexpr (kDbias) {
    // Every slot writes its row, rows or not: the fold reads them all.
    const int64_t slot = int64_t{blockIdx.y} * blockDim.y + threadIdx.y;
    store_floats<float, kW>(a.dbias_partials + slot * a.cols + c, col_sum);
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
  const bool dbias = p.backward && p.bias != nullptr;
  const int width = vec ? w : 1;
  const RowLaunch launch = dbias ? row_launch(p.rows, p.cols, width, kDbiasMaxBlocks)
                                 : row_launch(p.rows, p.cols, width);
  const int64_t slots = int64_t{launch.grid.y} * launch.rows_per_block;
  const DropoutArgs args{p.x.data,
                         p.residual.data,
                         p.backward ? nullptr : p.bias,
                         p.out.data,
                         dbias ? static_cast<float*>(p.workspace.data) : nullptr,
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
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.backward, [&](auto bwd) {
      dispatch_bool(vec, [&](auto v) {
        constexpr int kW = decltype(v)::value ? 16 / sizeof(T) : 1;
        constexpr bool kBackward = decltype(bwd)::value;
        // With dbias the kernel runs even on zero rows: its slots write the zero partials.
        if (p.cols > 0 && (p.rows > 0 || dbias)) {
          auto kernel = dbias ? dropout_kernel<T, kW, kBackward, kBackward>
                              : dropout_kernel<T, kW, kBackward>;
          kernel<<<launch.grid, launch.block, 0, stream>>>(args);
          KILN_CUDA_CHECK(cudaGetLastError());
        }
        variant = std::string(p.backward ? "dropout_backward<" : "dropout_forward<") +
                  std::string(dtype_name(p.dtype)) + ",vec" + std::to_string(kW) +
                  (p.masked ? ",masked" : ",unmasked") + ",tpr" +
                  std::to_string(launch.threads_per_row) + ",rpb" +
                  std::to_string(launch.rows_per_block) +
                  (dbias ? ",dbias_slots" + std::to_string(slots) : std::string()) + ">";
      });
      if (dbias && p.cols > 0) {
        FoldColumns<T> fold;
        fold.partials[0] = args.dbias_partials;
        fold.out[0] = static_cast<T*>(p.bias);
        fold.slots = slots;
        fold.cols = static_cast<int>(p.cols);
        launch_fold_columns(fold, static_cast<cudaStream_t>(stream));
        variant += " + dbias_fold";
      }
    });
  });
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
