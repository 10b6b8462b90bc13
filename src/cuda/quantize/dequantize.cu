// dequantize_fp8 on CUDA: row_launch's elementwise shape, one 16-byte store of out (8 or 4
// elements, read as 8 or 4 bytes of values) a thread a row where every row is aligned; the
// scale of an access's tile is looked up by shifts (tiles are 128 wide and tall, or a whole row,
// or the whole tensor; 128 is a multiple of 16, so an access never straddles two tiles).
// out = fp32(value) * scale, rounded. Bytes: values read once, out written once, scales read
// (from cache).
#include <cstdlib>
#include <string>

#include "core/dispatch.h"
#include "cuda/common/cuda_check.h"
#include "cuda/common/elements.cuh"
#include "cuda/common/fp8_pack.cuh"
#include "cuda/common/row_launch.h"
#include "cuda/quantize/quantize_launch.h"

namespace kiln::cuda {
namespace {

struct DequantArgs {
  const uint8_t* values;
  void* out;
  int64_t values_stride, out_stride, rows, cols;
  const float* scales;
  int64_t scale_row_stride, scale_col_stride;  // 0 where the tile spans the dim
  int row_shift, col_shift;                    // log2 of the tile's edge (7) or 0
};

// Rows a thread has in flight: the row launch is sized so that each thread walks at least this
// many. On the H100 (16384 x 8192 groups to bf16, 16 values a thread) one row ran at 79% of copy,
// two at 82%, four at 80%; what held it back was the strided stores (see dequantize_fp8). With one
// 16-byte store a thread and two rows: 95%.
constexpr int kDequantRowsDefault = 2;

template <typename T, __nv_fp8_interpretation_t Q, int W, int kDequantRows, int kThreads>
__global__ void __launch_bounds__(kThreads) dequant_kernel(const __grid_constant__ DequantArgs a) {
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * W;
  if (c >= a.cols) return;
  const int64_t step = int64_t{gridDim.y} * blockDim.y;
  const int64_t scale_col = (c >> a.col_shift) * a.scale_col_stride;
  // kDequantRows rows a pass, all loaded before any is stored (the compiler cannot prove that out
  // and values do not alias, so it would not move a later row's load above a store).
  for (int64_t r0 = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r0 < a.rows;
       r0 += kDequantRows * step) {
    Pack<uint8_t, W> v[kDequantRows];
    float s[kDequantRows];
#pragma unroll
    for (int j = 0; j < kDequantRows; ++j) {
      const int64_t r = r0 + j * step;
      if (r < a.rows) {
        v[j] = *reinterpret_cast<const Pack<uint8_t, W>*>(a.values + r * a.values_stride + c);
        s[j] = a.scales[(r >> a.row_shift) * a.scale_row_stride + scale_col];
      }
    }
#pragma unroll
    for (int j = 0; j < kDequantRows; ++j) {
      const int64_t r = r0 + j * step;
      if (r >= a.rows) break;
      float f[W];
      from_fp8<Q, W>(v[j], f);
#pragma unroll
      for (int k = 0; k < W; ++k) f[k] *= s[j];
      store_floats<T, W>(static_cast<T*>(a.out) + r * a.out_stride + c, f);
    }
  }
}

}  // namespace

std::string dequantize_fp8(const DequantizeProblem& p, Stream stream) {
  if (p.values.rows == 0) return "empty";
  // Values an access: one 16-byte store of out (8 for bf16/f16, 4 for f32), so a warp's stores
  // are contiguous. 16 values an access (two strided 16-byte stores of bf16 a lane) ran groups to
  // bf16 at 79-82% of copy on the H100 (16384 x 8192, s10).
  const int vec_width = 16 / static_cast<int>(dtype_size(p.out.dtype));
  const bool vec = rows_vector_aligned(p.values.cols, vec_width, {&p.values, &p.out});
  const QuantGranularity g = p.granularity;
  DequantArgs a{};
  a.values = static_cast<const uint8_t*>(p.values.data);
  a.out = p.out.data;
  a.values_stride = p.values.row_stride;
  a.out_stride = p.out.row_stride;
  a.rows = p.values.rows;
  a.cols = p.values.cols;
  a.scales = p.tiles.scales;
  const bool by_row = g != QuantGranularity::tensor;
  const bool by_col = g == QuantGranularity::group || g == QuantGranularity::block;
  a.scale_row_stride = by_row ? p.tiles.row_stride : 0;
  a.scale_col_stride = by_col ? p.tiles.col_stride : 0;
  a.row_shift = g == QuantGranularity::block ? 7 : 0;
  a.col_shift = by_col ? 7 : 0;
  const int width = vec ? vec_width : 1;
  // s16 experiment, temporary: KILN_EXP_DEQUANT=1 runs one row a thread in blocks of 128.
  const bool one_shot = vec && std::getenv("KILN_EXP_DEQUANT") != nullptr;
  const int rows_a_thread = one_shot ? 1 : kDequantRowsDefault;
  const int threads = one_shot ? 128 : kRowBlockThreads;
  const RowShape one_pass = row_shape(a.rows, a.cols, width, 0, threads);
  const int64_t passes = (one_pass.blocks_y + rows_a_thread - 1) / rows_a_thread;
  const RowLaunch launch = row_launch(a.rows, a.cols, width, one_pass.blocks_x * passes, threads);
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.out.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.values.dtype == DType::f8e5m2, [&](auto e5m2) {
      constexpr __nv_fp8_interpretation_t kQ = decltype(e5m2)::value ? __NV_E5M2 : __NV_E4M3;
      dispatch_bool(vec, [&](auto v) {
        constexpr int kW = decltype(v)::value ? 16 / static_cast<int>(sizeof(T)) : 1;
        if (one_shot) {
          dequant_kernel<T, kQ, kW, 1, 128><<<launch.grid, launch.block, 0, stream>>>(a);
        } else {
          dequant_kernel<T, kQ, kW, kDequantRowsDefault, kRowBlockThreads>
              <<<launch.grid, launch.block, 0, stream>>>(a);
        }
        KILN_CUDA_CHECK(cudaGetLastError());
        variant = "dequantize_fp8<" + std::string(dtype_name(p.values.dtype)) + "->" +
                  std::string(dtype_name(p.out.dtype)) + "," + std::string(granularity_name(g)) +
                  ",vec" + std::to_string(kW) + ",rows" + std::to_string(rows_a_thread) + ",tpr" +
                  std::to_string(launch.threads_per_row) + ">";
      });
    });
  });
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
