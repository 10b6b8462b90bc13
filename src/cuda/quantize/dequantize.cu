// dequantize_fp8 on CUDA: row_launch's elementwise shape, one 16-byte store of out (8 or 4
// elements, read as 8 or 4 bytes of values) a thread a row where every row is aligned; the
// scale of an access's tile is looked up by shifts (tiles are 128 wide and tall, or a whole row,
// or the whole tensor; 128 is a multiple of 16, so an access never straddles two tiles).
// out = fp32(value) * scale, rounded. Bytes: values read once, out written once, scales read
// (from cache).
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

// A thread converts one access of one row (and walks on by the grid's rows past 65535 blocks),
// in blocks of 128 threads, as torch.compile's kernel does. On the H100 (16384 x 8192 groups to
// bf16), two rows a thread in blocks of 256 ran at 0.1428 ms; this shape at 0.1414-0.1417 ms,
// against torch.compile's 0.1398-0.1400 in the same runs (s16).
constexpr int kDequantThreads = 128;

template <typename T, __nv_fp8_interpretation_t Q, int W>
__global__ void __launch_bounds__(kDequantThreads)
    dequant_kernel(const __grid_constant__ DequantArgs a) {
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * W;
  if (c >= a.cols) return;
  const int64_t step = int64_t{gridDim.y} * blockDim.y;
  const int64_t scale_col = (c >> a.col_shift) * a.scale_col_stride;
  for (int64_t r = int64_t{blockIdx.y} * blockDim.y + threadIdx.y; r < a.rows; r += step) {
    const Pack<uint8_t, W> v =
        *reinterpret_cast<const Pack<uint8_t, W>*>(a.values + r * a.values_stride + c);
    const float s = a.scales[(r >> a.row_shift) * a.scale_row_stride + scale_col];
    float f[W];
    from_fp8<Q, W>(v, f);
#pragma unroll
    for (int k = 0; k < W; ++k) f[k] *= s;
    store_floats<T, W>(static_cast<T*>(a.out) + r * a.out_stride + c, f);
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
  const RowLaunch launch = row_launch(a.rows, a.cols, width, 0, kDequantThreads);
  std::string variant;
  dispatch_value<DType::f32, DType::bf16, DType::f16>(p.out.dtype, p.op, [&](auto dt) {
    using T = typename CudaType<decltype(dt)::value>::type;
    dispatch_bool(p.values.dtype == DType::f8e5m2, [&](auto e5m2) {
      constexpr __nv_fp8_interpretation_t kQ = decltype(e5m2)::value ? __NV_E5M2 : __NV_E4M3;
      dispatch_bool(vec, [&](auto v) {
        constexpr int kW = decltype(v)::value ? 16 / static_cast<int>(sizeof(T)) : 1;
        dequant_kernel<T, kQ, kW><<<launch.grid, launch.block, 0, stream>>>(a);
        KILN_CUDA_CHECK(cudaGetLastError());
        variant = "dequantize_fp8<" + std::string(dtype_name(p.values.dtype)) + "->" +
                  std::string(dtype_name(p.out.dtype)) + "," + std::string(granularity_name(g)) +
                  ",vec" + std::to_string(kW) + ",tpr" + std::to_string(launch.threads_per_row) +
                  ">";
      });
    });
  });
  if (!vec) variant += " (unaligned: scalar path)";
  return variant;
}

}  // namespace kiln::cuda
